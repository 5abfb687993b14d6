package media

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// hostile makes one generated file in dir with ffmpeg.
func hostile(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("ffmpeg", append(append([]string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y"}, args...), out)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, b)
	}
	return out
}

// assertPublic checks that the client-facing text of err names what
// happened and carries no path and no ffmpeg output.
func assertPublic(t *testing.T, err error, dirs []string, want string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v is not a *media.Error", err, err)
	}
	pub := e.Public()
	for _, d := range dirs {
		if strings.Contains(pub, d) {
			t.Errorf("public error %q names the worker path %s", pub, d)
		}
	}
	if strings.Contains(pub, "@ 0x") || strings.Contains(pub, "[") || len(pub) > 400 {
		t.Errorf("public error %q carries ffmpeg output or is too long", pub)
	}
	if !strings.Contains(pub, want) {
		t.Errorf("public error %q does not say %q", pub, want)
	}
}

// TestHostileReferences: playlists and lists that name other files or
// URLs are refused before their demuxer runs: the canary outside the task
// folder is never opened and the loopback listener never contacted.
func TestHostileReferences(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	secret := t.TempDir() // someone else's files
	canary := hostile(t, secret, "canary.mp4", "-f", "lavfi", "-i", "testsrc=s=64x48:r=5:d=2", "-c:v", "libx264", "-preset", "ultrafast")
	var hits atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.ServeFile(w, r, canary)
	})}
	go srv.Serve(l) // owner: this test; closed below
	t.Cleanup(func() { srv.Close() })
	url := "http://" + l.Addr().String() + "/canary.mp4"

	in := t.TempDir() // the task folder
	write := func(name, body string) string {
		p := filepath.Join(in, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hls := func(entry string) string {
		return "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n" + entry + "\n#EXT-X-ENDLIST\n"
	}
	cases := []struct{ name, path, format string }{
		{"hls file://", write("a.m3u8", hls("file://"+canary)), "hls"},
		{"hls plain path", write("b.mp4", hls(canary)), "hls"},
		{"hls http", write("c.m3u8", hls(url)), "hls"},
		{"live hls (no ENDLIST)", write("d.m3u8", strings.TrimSuffix(hls(url), "#EXT-X-ENDLIST\n")), "hls"},
		{"ffconcat", write("e.txt", "ffconcat version 1.0\nfile '"+canary+"'\nfile '"+url+"'\n"), "concat"},
		{"srt", write("f.srt", "1\n00:00:00,000 --> 00:00:01,000\nhello\n"), "srt"},
		{"sdp", write("g.sdp", "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video "+strings.Split(l.Addr().String(), ":")[1]+" RTP/AVP 96\na=rtpmap:96 H264/90000\n"), "sdp"},
	}
	tools := &Tools{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testContext(t)
			start := time.Now()
			_, err := tools.Probe(ctx, c.path)
			assertKind(t, err, ErrFormat)
			assertPublic(t, err, []string{in, secret, tmp}, fmt.Sprintf("detected format %q", c.format))
			_, _, err = tools.Thumbnails(ctx, c.path, FrameOptions{})
			assertKind(t, err, ErrFormat)
			_, err = tools.Transcode(ctx, c.path, filepath.Join(in, "proxy.mp4"), TranscodeOptions{})
			assertKind(t, err, ErrFormat)
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("refusing took %v", d)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback listener was contacted %d times", n)
	}
	assertDirEmpty(t, tmp)
}

// TestHostileLimits: each bomb ends with the limit it hit named, and
// nothing is left in the temporary folder. The files are small and the
// limits lowered, so that each shows its limit in seconds.
func TestHostileLimits(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dir := t.TempDir()
	x264 := []string{"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"}
	big := hostile(t, dir, "big.mp4", append([]string{"-f", "lavfi", "-i", "color=c=gray:s=4096x2304:r=2:d=1"}, x264...)...)
	long := hostile(t, dir, "long.mkv", append([]string{"-f", "lavfi", "-i", "color=s=2x2:r=1:d=7200"}, x264...)...)
	fast := hostile(t, dir, "fast.mp4", append([]string{"-f", "lavfi", "-i", "testsrc=s=16x16:r=5000:d=1"}, x264...)...)
	streamArgs := []string{"-f", "lavfi", "-i", "anullsrc=d=1"}
	for range 100 {
		streamArgs = append(streamArgs, "-map", "0:a")
	}
	streams := hostile(t, dir, "streams.mkv", append(streamArgs, "-c:a", "pcm_s16le")...)
	meta := filepath.Join(dir, "tags.txt")
	if err := os.WriteFile(meta, []byte(";FFMETADATA1\ncomment="+strings.Repeat("A", 600<<10)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tags := hostile(t, dir, "tags.mkv", append([]string{"-f", "lavfi", "-i", "testsrc=s=64x48:r=5:d=1", "-i", meta, "-map_metadata", "1"}, x264...)...)
	clip := hostile(t, dir, "clip.mp4", append([]string{"-f", "lavfi", "-i", "testsrc=s=320x240:r=25:d=4"}, x264...)...)

	cases := []struct {
		name   string
		tools  *Tools
		path   string
		op     string // probe, thumbnails, keyframes, transcode
		limit  string
		within time.Duration
	}{
		{"resolution", &Tools{Limits: Limits{MaxPixels: 1920 * 1080}}, big, "thumbnails", "resolution limit exceeded", 20 * time.Second},
		{"resolution, decode path", &Tools{Limits: Limits{MaxPixels: 1920 * 1080}}, big, "keyframes", "resolution limit exceeded", 20 * time.Second},
		{"duration", &Tools{Limits: Limits{MaxDuration: time.Hour}}, long, "probe", "duration limit exceeded: 2h0m0s", 20 * time.Second},
		{"frame rate", &Tools{}, fast, "probe", "frame rate limit exceeded", 20 * time.Second},
		{"stream count", &Tools{}, streams, "probe", "stream count limit exceeded: 100 streams", 20 * time.Second},
		{"tag bomb", &Tools{Limits: Limits{MaxProbeOutput: 64 << 10}}, tags, "probe", "metadata size limit exceeded", 20 * time.Second},
		{"packets", &Tools{Limits: Limits{MaxPackets: 20}}, clip, "keyframes", "packet count limit exceeded", 20 * time.Second},
		{"memory", &Tools{Limits: Limits{Memory: 200 << 20}}, big, "thumbnails", "memory limit exceeded", 20 * time.Second},
		{"wall clock", &Tools{Limits: Limits{TimeBase: time.Millisecond, TimeFactor: 0.0001}}, clip, "transcode", "time limit exceeded", 20 * time.Second},
		{"proxy size", &Tools{Limits: Limits{ProxyRatio: 0.01, ProxyFloor: 1024}}, clip, "transcode", "output size limit exceeded", 30 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testContext(t)
			start := time.Now()
			var err error
			switch c.op {
			case "probe":
				_, err = c.tools.Probe(ctx, c.path)
			case "thumbnails":
				_, _, err = c.tools.Thumbnails(ctx, c.path, FrameOptions{})
			case "keyframes":
				_, _, err = c.tools.Keyframes(ctx, c.path, FrameOptions{})
			case "transcode":
				_, err = c.tools.Transcode(ctx, c.path, filepath.Join(dir, "proxy.mp4"), TranscodeOptions{})
			}
			assertKind(t, err, ErrLimit)
			assertPublic(t, err, []string{dir, tmp}, c.limit)
			if d := time.Since(start); d > c.within {
				t.Errorf("took %v, want under %v", d, c.within)
			}
			t.Logf("%s: %v", c.name, err.(*Error).Public())
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "proxy.mp4")); err == nil {
		t.Error("a capped proxy was left as if complete")
	}
	assertDirEmpty(t, tmp)
}

// Raising the limit that was hit lets the same file through: the limits
// refuse by size, not by kind of file.
func TestHostileLimitRaised(t *testing.T) {
	dir := t.TempDir()
	long := hostile(t, dir, "long.mkv", "-f", "lavfi", "-i", "color=s=2x2:r=1:d=7200", "-c:v", "libx264", "-preset", "ultrafast")
	if _, err := (&Tools{Limits: Limits{MaxDuration: time.Hour}}).Probe(testContext(t), long); !errors.Is(err, ErrLimit) {
		t.Fatalf("with -media-max-duration 1h: %v, want the duration limit", err)
	}
	if _, err := (&Tools{Limits: Limits{MaxDuration: 3 * time.Hour}}).Probe(testContext(t), long); err != nil {
		t.Fatalf("with -media-max-duration 3h: %v", err)
	}
}
