package tasks

import (
	"context"
	"fmt"
	"testing"
	"time"

	"morag-gpu/media/transcribe"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// gpuTranscriber stands in for a GPU: each call takes a fixed time and
// no CPU, as a transcription on the GPU leaves the CPU to ffmpeg.
type gpuTranscriber struct {
	fakeTranscriber
	per time.Duration
}

func (g *gpuTranscriber) Transcribe(ctx context.Context, pcm []float32, opts transcribe.Options, progress func(float64)) (*transcribe.Transcript, error) {
	select {
	case <-time.After(g.per):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.fakeTranscriber.Transcribe(ctx, pcm, opts, progress)
}

// BenchmarkTranscriptionOverlap measures what -concurrency above
// -transcribe-streams buys: video tasks (probe, audio extraction,
// thumbnails, markdown) on one transcription stream that takes 250 ms per
// task. With -concurrency 1 each task's media work and its transcription
// run one after the other; with 2 or 3 the next task's media work runs
// while the stream transcribes. Compare the tasks/s of the sub-benchmarks:
//
//	go test ./worker/tasks -run '^$' -bench TranscriptionOverlap -benchtime 3x
func BenchmarkTranscriptionOverlap(b *testing.B) {
	needFixtures(b)
	const tasks = 8
	for _, conc := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("concurrency=%d/streams=1", conc), func(b *testing.B) {
			tr := &gpuTranscriber{per: 250 * time.Millisecond}
			_, client := startRunnerWith(b, MediaConfig{ForwardQueue: "celery", Transcriber: tr, TranscribeStreams: 1},
				func(c *runner.Config) { c.Concurrency = conc })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				results := make([]*protocol.AsyncResult, 0, tasks)
				for range tasks {
					ar, err := client.Send(ctx, ProcessFile, []any{fixtures.video, "video/mp4"}, nil, protocol.SendOptions{Queue: "gpu-tasks-alice"})
					if err != nil {
						b.Fatal(err)
					}
					results = append(results, ar)
				}
				for _, ar := range results {
					if _, err := ar.Get(ctx); err != nil {
						b.Fatalf("task %s: %v", ar.ID, err)
					}
				}
			}
			b.ReportMetric(float64(b.N*tasks)/time.Since(start).Seconds(), "tasks/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
