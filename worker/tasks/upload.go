package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
)

// uploadResult sends a file produced by a task (the proxy transcode) to the
// gateway's POST /api/v1/files/upload-result as MoRAG's file-transfer
// client does: multipart "file" plus the form field "result_data", a JSON
// object naming the task. The file is streamed, never held in memory. It
// returns the gateway's JSON answer, the reference to record.
func (m *mediaTasks) uploadResult(ctx context.Context, gateway, file, name string, resultData map[string]any) (map[string]any, error) {
	data, err := json.Marshal(resultData)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan struct{})
	go func() { // owner: this call, which waits for it below
		defer close(done)
		pw.CloseWithError(writeUpload(mw, f, name, data))
	}()
	defer func() {
		pr.Close() // unblocks the writer if the request stopped reading
		<-done
	}()

	endpoint := strings.TrimRight(gateway, "/") + "/api/v1/files/upload-result"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, pr)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if m.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+m.cfg.APIKey)
	}
	resp, err := m.upload.Do(req)
	if err != nil {
		return nil, fmt.Errorf("upload to %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			hint = " (the gateway wants an API key: set MORAG_API_KEY on the worker)"
		}
		return nil, fmt.Errorf("upload to %s: HTTP %d%s: %s", endpoint, resp.StatusCode, hint, strings.TrimSpace(string(body)))
	}
	var ref map[string]any
	if err := json.Unmarshal(body, &ref); err != nil || ref == nil {
		ref = map[string]any{"response": strings.TrimSpace(string(body))}
	}
	return ref, nil
}

func writeUpload(mw *multipart.Writer, f io.Reader, name string, resultData []byte) error {
	if err := mw.WriteField("result_data", string(resultData)); err != nil {
		return err
	}
	part, err := mw.CreateFormFile("file", name)
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, f); err != nil {
		return err
	}
	return mw.Close()
}
