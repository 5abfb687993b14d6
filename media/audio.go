package media

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// SampleRate is the rate of the PCM that StreamPCM and DecodePCM deliver:
// whisper's 16 kHz.
const SampleRate = 16000

// pcmWallFactor is how much slower than real time the PCM's consumer may
// be: whisper on a small CPU runs at about real time with large models.
const pcmWallFactor = 20

// StreamPCM decodes the first audio stream of path to 16 kHz mono float32
// PCM and hands it to fn in consecutive windows of the given length (the
// last one shorter), offset being the window's start in the audio. The PCM
// comes straight from ffmpeg's stdout (-f f32le), with no temporary WAV,
// and only one window is in memory at a time, so hours of audio cost a
// window's worth of RAM.
//
// samples is reused between calls: copy what must outlive the call. An
// error from fn stops ffmpeg and is returned as is.
//
// Audio extraction never decodes video (-vn), so it needs no NVDEC: the
// cheapest video decode is none at all, and audio codecs have no GPU
// decoder. A file that ends before its headers say it should is reported
// as ErrTruncated after the windows that could be decoded.
func (t *Tools) StreamPCM(ctx context.Context, path string, window time.Duration, fn func(offset time.Duration, samples []float32) error) error {
	const op = "decode audio"
	if window <= 0 {
		return &Error{Op: op, Path: path, Err: fmt.Errorf("window must be positive, got %v", window)}
	}
	parent := ctx
	ctx, cancel := context.WithCancel(parent)
	defer cancel()

	// The probe comes first: its verdict (format, limits, no audio) must
	// stand before ffmpeg opens the file, and its duration sizes the
	// child's time limits.
	info, perr := t.Probe(ctx, path)
	if perr != nil {
		return reop(perr, op)
	}
	if info.Audio() == nil {
		return &Error{Op: op, Path: path, Kind: ErrNoAudio}
	}

	tail := newTail(stderrTail)
	args := ffmpegArgs(t.inputArgs(path, demuxerOf(info))...)
	args = append(args, "-vn", "-sn", "-dn", "-map", "0:a:0",
		"-ac", "1", "-ar", fmt.Sprint(SampleRate), "-c:a", "pcm_f32le",
		// Without this ffmpeg writes every ~1.6 KB packet to the pipe as it
		// comes, some 23,000 write calls and reader wake-ups for ten minutes
		// of audio, which made the pipe slower than a temporary WAV.
		"-flush_packets", "0",
		"-f", "f32le", "pipe:1")
	// The consumer (a transcriber) may be much slower than the decode, and
	// ffmpeg waits on the pipe meanwhile: the wall-clock limit is the
	// generous one of a whole decode, times the transcription margin.
	lim := t.limits().child(info.Duration, true, 0)
	lim.Wall += time.Duration(pcmWallFactor * float64(info.Duration))
	c, stdout, err := startChild(ctx, t.ffmpeg(), args, lim, nil, tail, true)
	if err != nil {
		return t.failure(ctx, op, path, t.ffmpeg(), err, tail, nil)
	}
	stop := func() {
		cancel()
		_ = c.wait()
	}

	n := max(1, int(window.Seconds()*SampleRate))
	buf := make([]byte, 4*n)
	samples := make([]float32, n)
	var total int64
	for {
		if err := parent.Err(); err != nil {
			// ffmpeg may be well ahead in the pipe; stop at the window
			// boundary instead of handing out what is buffered.
			stop()
			return &Error{Op: op, Path: path, Err: err}
		}
		k, rerr := io.ReadFull(stdout, buf)
		if m := k / 4; m > 0 {
			for i := range m {
				samples[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
			}
			if err := fn(pcmDuration(total), samples[:m]); err != nil {
				stop()
				return err
			}
			total += int64(m)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			stop()
			if err := parent.Err(); err != nil {
				return &Error{Op: op, Path: path, Err: err}
			}
			return &Error{Op: op, Path: path, Err: rerr}
		}
	}
	if err := c.wait(); err != nil {
		return t.failure(ctx, op, path, t.ffmpeg(), err, tail, c)
	}
	if tail.Kind() == ErrTruncated {
		return &Error{Op: op, Path: path, Kind: ErrTruncated, Stderr: tail.String()}
	}
	audio := info.Audio()
	// An MP3 with a Xing header or a WAV with a data size says how long it
	// is; ffmpeg stops quietly where the bytes stop. Only audio-only files
	// are checked: in a video container the audio may legitimately end
	// before the picture, and Matroska does not time its streams.
	if !info.HasVideo() {
		declared := audio.Duration
		if declared == 0 {
			declared = info.Duration
		}
		decoded := pcmDuration(total)
		if declared > 0 && decoded+max(time.Second, declared/20) < declared {
			return &Error{Op: op, Path: path, Kind: ErrTruncated,
				Err: fmt.Errorf("headers say %.2fs, decoded %.2fs", declared.Seconds(), decoded.Seconds())}
		}
	}
	return nil
}

// DecodePCM decodes the whole audio of path into memory, for inputs known
// to be short; use StreamPCM for anything else. An input longer than limit
// is ErrTooLong (limit <= 0 means no limit).
func (t *Tools) DecodePCM(ctx context.Context, path string, limit time.Duration) ([]float32, error) {
	var pcm []float32
	var maxSamples int64 = math.MaxInt64
	if limit > 0 {
		maxSamples = int64(limit.Seconds() * SampleRate)
	}
	errLimit := errors.New("limit")
	err := t.StreamPCM(ctx, path, 30*time.Second, func(_ time.Duration, s []float32) error {
		if int64(len(pcm)+len(s)) > maxSamples {
			return errLimit
		}
		pcm = append(pcm, s...)
		return nil
	})
	if errors.Is(err, errLimit) {
		return nil, &Error{Op: "decode audio", Path: path, Kind: ErrTooLong, Err: fmt.Errorf("longer than %v", limit)}
	}
	if err != nil {
		return nil, err
	}
	return pcm, nil
}

// pcmDuration converts a sample count at SampleRate to a duration.
func pcmDuration(samples int64) time.Duration {
	return time.Duration(samples) * time.Second / SampleRate
}

// reop relabels an *Error from a sub-step (the probe before a decode) with
// the operation the caller asked for.
func reop(err error, op string) error {
	var e *Error
	if errors.As(err, &e) {
		c := *e
		c.Op = op
		return &c
	}
	return err
}
