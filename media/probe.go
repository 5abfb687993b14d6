package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Info is what ffprobe knows about a file.
type Info struct {
	Path string `json:"path"`
	// Format is ffprobe's format_name, e.g. "mov,mp4,m4a,3gp,3g2,mj2";
	// MoRAG reports it as the video's "format".
	Format         string            `json:"format"`
	FormatLongName string            `json:"format_long_name,omitempty"`
	Duration       time.Duration     `json:"duration"`
	StartTime      time.Duration     `json:"start_time"`
	Size           int64             `json:"size"`
	BitRate        int64             `json:"bit_rate"`
	Tags           map[string]string `json:"tags,omitempty"`
	Streams        []Stream          `json:"streams"`
}

// Stream is one elementary stream.
type Stream struct {
	Index int    `json:"index"`
	Type  string `json:"type"` // "video", "audio", "subtitle", "data", "attachment"
	Codec string `json:"codec"`
	// Video.
	Width  int     `json:"width,omitempty"`
	Height int     `json:"height,omitempty"`
	FPS    float64 `json:"fps,omitempty"` // r_frame_rate as a number
	// AvgFPS is avg_frame_rate, what MaxFPS is held to (r_frame_rate is a
	// timebase guess that Matroska puts at 1000).
	AvgFPS float64 `json:"-"`
	// AttachedPic marks cover art (an MP3's or M4A's picture), which ffprobe
	// lists as a video stream of one frame. It is not video.
	AttachedPic bool `json:"attached_pic,omitempty"`
	// Audio.
	Channels      int `json:"channels,omitempty"`
	SampleRate    int `json:"sample_rate,omitempty"`
	BitsPerSample int `json:"bits_per_sample,omitempty"` // 0 for lossy codecs
	// Both.
	BitRate  int64         `json:"bit_rate,omitempty"`
	Duration time.Duration `json:"duration,omitempty"` // 0 when the container does not say (Matroska)
	PixFmt   string        `json:"pix_fmt,omitempty"`
}

// Video returns the first real video stream (not cover art), or nil.
func (i *Info) Video() *Stream {
	for k := range i.Streams {
		if s := &i.Streams[k]; s.Type == "video" && !s.AttachedPic {
			return s
		}
	}
	return nil
}

// Audio returns the first audio stream, or nil.
func (i *Info) Audio() *Stream {
	for k := range i.Streams {
		if s := &i.Streams[k]; s.Type == "audio" {
			return s
		}
	}
	return nil
}

// HasVideo reports whether the file has a real video stream.
func (i *Info) HasVideo() bool { return i.Video() != nil }

// HasAudio reports whether the file has an audio stream.
func (i *Info) HasAudio() bool { return i.Audio() != nil }

// Probe runs ffprobe on path. A file ffprobe cannot read is an *Error of
// kind ErrNotFound, ErrCorrupt, ErrTruncated or ErrNoStreams.
func (t *Tools) Probe(ctx context.Context, path string) (*Info, error) {
	const op = "probe"
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, &Error{Op: op, Path: path, Kind: ErrNotFound, Err: err}
	case err != nil:
		return nil, &Error{Op: op, Path: path, Err: err}
	case st.IsDir():
		return nil, &Error{Op: op, Path: path, Kind: ErrCorrupt, Err: errors.New("is a directory")}
	case st.Size() == 0:
		return nil, &Error{Op: op, Path: path, Kind: ErrCorrupt, Err: errors.New("file is empty")}
	}
	lim := t.limits()
	args := append([]string{"-v", "error"}, t.inputArgs(path, "")...)
	args = append(args[:len(args)-2], // ffprobe takes the URL without -i
		"-show_entries", probeEntries, "-of", "json", fileURL(path))
	var p probeJSON
	var decodeErr error // judged after the exit status, which explains more
	err = t.run(ctx, op, path, t.ffprobe(), args, lim.child(0, false, 0), func(r io.Reader) error {
		// Streamed and capped: a tag bomb stops at MaxProbeOutput instead
		// of being read whole into the worker.
		capErr := &Error{Op: op, Path: path, Kind: ErrLimit, Err: &LimitError{
			Limit: "metadata size", Max: byteCount(lim.MaxProbeOutput), Flag: "media-max-metadata"}}
		if err := json.NewDecoder(newCapped(r, lim.MaxProbeOutput, capErr)).Decode(&p); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return e
			}
			decodeErr = err
		}
		return nil
	})
	if err == nil && decodeErr != nil {
		err = &Error{Op: op, Path: path, Kind: ErrCorrupt, Err: fmt.Errorf("unreadable ffprobe output: %w", decodeErr)}
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) && strings.Contains(e.Stderr, "not on whitelist") && ctx.Err() == nil {
			return nil, &Error{Op: op, Path: path, Kind: ErrFormat, Err: &FormatError{Format: t.detectFormat(ctx, path)}, Stderr: e.Stderr}
		}
		if errors.As(err, &e) && e.Kind == nil && e.Err != nil && ctx.Err() == nil {
			// ffprobe failed on the input without a message we know:
			// still the input's fault, not the worker's.
			e.Kind = ErrCorrupt
		}
		return nil, err
	}
	info := p.info()
	info.Path = path
	if len(info.Streams) == 0 || (!info.HasAudio() && !info.HasVideo()) {
		return nil, &Error{Op: op, Path: path, Kind: ErrNoStreams}
	}
	if l := lim.checkInfo(info); l != nil {
		return nil, &Error{Op: op, Path: path, Kind: ErrLimit, Err: l}
	}
	return info, nil
}

// probeEntries is all that Info needs, and nothing more: stream tags,
// side data and chapters, which a hostile file can make huge, are not
// printed at all.
const probeEntries = "format=format_name,format_long_name,duration,start_time,size,bit_rate:format_tags" +
	":stream=index,codec_type,codec_name,width,height,r_frame_rate,avg_frame_rate,pix_fmt,channels," +
	"sample_rate,bits_per_sample,bits_per_raw_sample,bit_rate,duration:stream_disposition=attached_pic"

// probeJSON mirrors the parts of ffprobe's JSON that Info uses. ffprobe
// prints most numbers as strings.
type probeJSON struct {
	Format struct {
		FormatName     string            `json:"format_name"`
		FormatLongName string            `json:"format_long_name"`
		Duration       string            `json:"duration"`
		StartTime      string            `json:"start_time"`
		Size           string            `json:"size"`
		BitRate        string            `json:"bit_rate"`
		Tags           map[string]string `json:"tags"`
	} `json:"format"`
	Streams []struct {
		Index            int    `json:"index"`
		CodecType        string `json:"codec_type"`
		CodecName        string `json:"codec_name"`
		Width            int    `json:"width"`
		Height           int    `json:"height"`
		RFrameRate       string `json:"r_frame_rate"`
		AvgFrameRate     string `json:"avg_frame_rate"`
		PixFmt           string `json:"pix_fmt"`
		Channels         int    `json:"channels"`
		SampleRate       string `json:"sample_rate"`
		BitsPerSample    int    `json:"bits_per_sample"`
		BitsPerRawSample string `json:"bits_per_raw_sample"`
		BitRate          string `json:"bit_rate"`
		Duration         string `json:"duration"`
		Disposition      struct {
			AttachedPic int `json:"attached_pic"`
		} `json:"disposition"`
	} `json:"streams"`
}

func parseProbe(data []byte) (*Info, error) {
	var p probeJSON
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("unreadable ffprobe output: %w", err)
	}
	return p.info(), nil
}

func (p *probeJSON) info() *Info {
	info := &Info{
		Format:         p.Format.FormatName,
		FormatLongName: p.Format.FormatLongName,
		Duration:       seconds(p.Format.Duration),
		StartTime:      seconds(p.Format.StartTime),
		Size:           atoi64(p.Format.Size),
		BitRate:        atoi64(p.Format.BitRate),
		Tags:           p.Format.Tags,
	}
	for _, s := range p.Streams {
		st := Stream{
			Index:       s.Index,
			Type:        s.CodecType,
			Codec:       s.CodecName,
			Width:       s.Width,
			Height:      s.Height,
			PixFmt:      s.PixFmt,
			AttachedPic: s.Disposition.AttachedPic != 0,
			Channels:    s.Channels,
			SampleRate:  int(atoi64(s.SampleRate)),
			BitRate:     atoi64(s.BitRate),
			Duration:    seconds(s.Duration),
		}
		if s.CodecType == "video" {
			st.FPS = ParseRate(s.RFrameRate)
			st.AvgFPS = ParseRate(s.AvgFrameRate)
			if st.FPS == 0 {
				st.FPS = st.AvgFPS
			}
		}
		st.BitsPerSample = s.BitsPerSample
		if st.BitsPerSample == 0 {
			st.BitsPerSample = int(atoi64(s.BitsPerRawSample))
		}
		info.Streams = append(info.Streams, st)
	}
	if info.Duration == 0 {
		// Some containers only time their streams.
		for _, s := range info.Streams {
			info.Duration = max(info.Duration, s.Duration)
		}
	}
	return info
}

// ParseRate parses ffprobe's "30000/1001" or "25" frame rates; anything
// unreadable, including "0/0", is 0.
func ParseRate(s string) float64 {
	num, den, ok := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0
	}
	if !ok {
		return n
	}
	d, err := strconv.ParseFloat(den, 64)
	if err != nil || d == 0 {
		return 0
	}
	return n / d
}

func seconds(s string) time.Duration {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) || f > 1e9 {
		return 0
	}
	return time.Duration(f * float64(time.Second))
}

func atoi64(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}
