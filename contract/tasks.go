package contract

// MoRAG's task names (names and signatures as upstream's morag.worker and
// morag.ingest_tasks at bb0da91). The gateway sends them, Python MoRAG
// workers register all of them, the Go worker serves some and forwards
// the rest.
const (
	// ProcessFileTask(file_path, content_type=None, options=None)
	ProcessFileTask = "morag.worker.process_file_task"
	// ProcessFileRemoteTask(file_url, user_id, content_type=None, task_options=None)
	ProcessFileRemoteTask = "morag.worker.process_file_task_remote"
	// ProcessURLTask(url, content_type=None, options=None)
	ProcessURLTask = "morag.worker.process_url_task"
	// ProcessURLRemoteTask(url, user_id, content_type=None, task_options=None)
	ProcessURLRemoteTask = "morag.worker.process_url_task_remote"
	// ProcessWebPageTask(url, options=None)
	ProcessWebPageTask = "morag.worker.process_web_page_task"
	// ProcessWebPageRemoteTask(url, user_id, ...)
	ProcessWebPageRemoteTask = "morag.worker.process_web_page_task_remote"
	// ProcessYouTubeTask(url, options=None)
	ProcessYouTubeTask = "morag.worker.process_youtube_video_task"
	// ProcessYouTubeRemoteTask(url, user_id, ...)
	ProcessYouTubeRemoteTask = "morag.worker.process_youtube_video_task_remote"
	// ProcessBatchTask(items, options=None)
	ProcessBatchTask = "morag.worker.process_batch_task"
	// SearchTask(query, limit, filters=None)
	SearchTask = "morag.worker.search_task"
	// HealthCheckTask()
	HealthCheckTask = "morag.worker.health_check_task"
	// IngestFileTask(file_path, source_type, options)
	IngestFileTask = "morag.ingest_tasks.ingest_file_task"
	// IngestURLTask(url, source_type, options)
	IngestURLTask = "morag.ingest_tasks.ingest_url_task"
	// IngestBatchTask(items, options)
	IngestBatchTask = "morag.ingest_tasks.ingest_batch_task"
)
