package media

import (
	"context"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// acceptedFormats are the demuxers user input may be opened with: the
// containers MoRAG's audio and video processing take (mp4/mov/m4a/3gp,
// mkv/webm, avi, wmv/wma, flv, MPEG-TS and -PS, Ogg/Opus, WAV, MP3, AAC,
// FLAC, AIFF, AMR). None of them opens another file or URL (mov's external
// data references are switched off with enable_drefs=0). Everything else
// is refused before it is demuxed: hls and dash playlists, concat and
// ffconcat lists, image2 patterns, subtitle and text formats, tee, data
// URIs, and the ~300 other demuxers Debian's ffmpeg has.
const acceptedFormats = "mov,matroska,webm,avi,asf,flv,mpegts,mpeg,ogg,wav,mp3,aac,flac,aiff,amr"

const acceptedFormatsText = "mp4/mov, mkv/webm, avi, asf, flv, mpegts, mpeg, ogg, wav, mp3, aac, flac, aiff, amr"

// Image formats are not audio or video, but they are MoRAG content that a
// Python worker processes; IsImageFormat lets the caller forward them.
var imageFormat = regexp.MustCompile(`^(image2|gif|apng|webp|\w+_pipe)$`)

// IsImageFormat reports whether a detected format name is a still image.
func IsImageFormat(format string) bool {
	for _, f := range strings.Split(format, ",") {
		if imageFormat.MatchString(f) {
			return true
		}
	}
	return false
}

// inputArgs are the options every ffmpeg/ffprobe run puts before the
// user's input: one local file, opened only with an accepted demuxer,
// with no external references and no frame above MaxPixels. demuxer, when
// known from an earlier probe, is forced so that a second look at the
// same bytes cannot pick another one.
func (t *Tools) inputArgs(path, demuxer string) []string {
	args := []string{"-protocol_whitelist", "file", "-format_whitelist", acceptedFormats}
	if demuxer != "" {
		args = append(args, "-f", demuxer)
	}
	if demuxer == "" || demuxer == "mov" {
		// mov's external data references (a "dref" naming another file)
		// and absolute alias paths stay off, whatever a later ffmpeg's
		// defaults become. ffmpeg, unlike ffprobe (demuxer ""), refuses
		// options its demuxer lacks, so it gets them only for mov.
		args = append(args, "-enable_drefs", "0", "-use_absolute_path", "0")
	}
	return append(args, "-max_pixels", strconv.FormatInt(t.limits().MaxPixels, 10), "-i", fileURL(path))
}

// demuxerOf is the name to force for a probed Info: the first of
// ffprobe's comma-separated format names ("mov,mp4,m4a,..." → "mov").
func demuxerOf(info *Info) string {
	name, _, _ := strings.Cut(info.Format, ",")
	return name
}

// probedFormat finds, in ffprobe's debug output, the format it detected:
// "Format hls probed with size=2048 and score=100".
var probedFormat = regexp.MustCompile(`Format (\S+) probed with size=`)

// detectFormat names the format of a file that the whitelist refused, so
// that the error can say what it is. The run still has the whitelist on:
// the format is probed (which reads bytes and opens nothing) and refused
// before its demuxer starts.
func (t *Tools) detectFormat(ctx context.Context, path string) string {
	w := &formatSniffer{}
	args := append([]string{"-hide_banner", "-v", "debug"}, t.inputArgs(path, "")...)
	// The input args end with -i; ffprobe needs the URL without it.
	args = append(args[:len(args)-2], fileURL(path))
	c, _, err := startChild(ctx, t.ffprobe(), args, t.limits().child(0, false, 0), io.Discard, w, false)
	if err != nil {
		return ""
	}
	_ = c.wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.format
}

// formatSniffer is a stderr writer that remembers the detected format.
type formatSniffer struct {
	mu     sync.Mutex
	line   []byte
	format string
}

func (f *formatSniffer) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range p {
		if b != '\n' {
			if len(f.line) < 512 {
				f.line = append(f.line, b)
			}
			continue
		}
		if f.format == "" {
			if m := probedFormat.FindSubmatch(f.line); m != nil {
				f.format = string(m[1])
			}
		}
		f.line = f.line[:0]
	}
	return len(p), nil
}
