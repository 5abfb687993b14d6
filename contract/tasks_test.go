package contract

import (
	"strings"
	"testing"
)

// Every task name is MoRAG's: in morag.worker or morag.ingest_tasks, as
// the Python workers register them.
func TestTaskNames(t *testing.T) {
	for _, name := range []string{
		ProcessFileTask, ProcessFileRemoteTask, ProcessURLTask, ProcessURLRemoteTask,
		ProcessWebPageTask, ProcessWebPageRemoteTask, ProcessYouTubeTask, ProcessYouTubeRemoteTask,
		ProcessBatchTask, SearchTask, HealthCheckTask,
	} {
		if !strings.HasPrefix(name, "morag.worker.") {
			t.Errorf("%q is not in morag.worker", name)
		}
	}
	for _, name := range []string{IngestFileTask, IngestURLTask, IngestBatchTask} {
		if !strings.HasPrefix(name, "morag.ingest_tasks.") {
			t.Errorf("%q is not in morag.ingest_tasks", name)
		}
	}
}
