package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Row 4, upload: one large file streamed to the Go gateway's
// POST /process/file?async=true, with the gateway's RSS polled meanwhile.

var uploadKeys = []string{"up_rate", "up_idle", "up_peak"}

func declareUploadRows(t *table, cfg config) {
	size := fmt.Sprintf("%d MiB", cfg.UploadMB)
	if cfg.UploadMB%1024 == 0 {
		size = fmt.Sprintf("%d GiB", cfg.UploadMB/1024)
	}
	t.add("up_rate", "upload "+size+" to POST /process/file?async=true", fmtMBs, goal{})
	t.add("up_idle", "gateway RSS before the upload", fmtMiB, goal{})
	t.add("up_peak", "gateway RSS peak during the upload (polled; flat = streaming)", fmtMiB, goal{})
}

func benchUpload(b *testing.B, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	e.tab.pyNA("Go gateway only", uploadKeys...)
	if err := e.flush(); err != nil {
		b.Fatalf("flush redis: %v", err)
	}
	err := func() error {
		size := int64(e.cfg.UploadMB) << 20
		// A sparse file: reading it costs no disk, so the client side is
		// not what limits the rate.
		file := filepath.Join(b.TempDir(), "bench-upload.bin")
		f, err := os.Create(file)
		if err != nil {
			return err
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			return err
		}
		f.Close()

		p, base, err := e.startGateway(ctx, b, b.TempDir())
		if err != nil {
			return err
		}
		defer p.Kill()
		time.Sleep(e.cfg.Settle)
		idle, _, err := treeRSS(p.Pid())
		if err != nil {
			return err
		}
		e.tab.setGo("up_idle", idle)

		progress("upload: %d MiB to the Go gateway", e.cfg.UploadMB)
		sampler := sampleRSS(p.Pid(), 50*time.Millisecond)
		elapsed, err := streamUpload(ctx, base+"/process/file?async=true", file)
		peak := sampler.stop()
		if err != nil {
			return err
		}
		hwm, _ := procStatusKB(p.Pid(), "VmHWM")
		rate := float64(size) / 1e6 / elapsed.Seconds()
		e.tab.setGo("up_rate", rate)
		e.tab.setGo("up_peak", max(peak, idle))
		b.ReportMetric(rate, "upload-MB/s")
		verdict := "flat"
		if max(peak, idle)-idle > 64 {
			verdict = "NOT flat (grew by more than 64 MiB)"
		}
		e.tab.note("upload: gateway RSS %.1f → peak %.1f MiB while %d MiB streamed (VmHWM %.1f MiB): %s",
			idle, max(peak, idle), e.cfg.UploadMB, float64(hwm)/1024, verdict)
		return nil
	}()
	if err != nil {
		e.tab.goNA(err.Error(), uploadKeys...)
	}
}

// streamUpload posts file as the multipart field "file" (after the form
// fields, as MoRAG clients send them) through an io.Pipe, so neither side
// of the client holds the file in memory, and returns the time until the
// gateway answered 2xx with a task_id.
func streamUpload(ctx context.Context, url, file string) (time.Duration, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	wrote := make(chan error, 1)
	go func() {
		err := func() error {
			for k, v := range map[string]string{"content_type": "document", "options": "{}", "gpu": "false"} {
				if err := mw.WriteField(k, v); err != nil {
					return err
				}
			}
			fw, err := mw.CreateFormFile("file", filepath.Base(file))
			if err != nil {
				return err
			}
			f, err := os.Open(file)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(fw, f); err != nil {
				return err
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
		wrote <- err
	}()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, pr)
	if err != nil {
		pr.CloseWithError(err)
		<-wrote
		return 0, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}}
	start := time.Now()
	resp, err := hc.Do(req)
	elapsed := time.Since(start)
	// Unblocks the writer if the gateway answered before reading it all.
	pr.CloseWithError(io.ErrClosedPipe)
	werr := <-wrote
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ans struct {
		TaskID string `json:"task_id"`
	}
	if resp.StatusCode/100 != 2 || json.Unmarshal(body, &ans) != nil || ans.TaskID == "" {
		return 0, fmt.Errorf("POST /process/file answered %s: %s", resp.Status, oneLine(string(body), 120))
	}
	if werr != nil {
		return 0, fmt.Errorf("the gateway answered before the whole file was sent (%v)", werr)
	}
	return elapsed, nil
}
