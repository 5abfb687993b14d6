package httpapi

import "strings"

// MoRAG's content types, and how its server derives them, verbatim from
// bb0da91: normalize_content_type (server.py) for /process/file's form
// field, and MoRAGAPI._detect_content_type / _detect_content_type_from_file
// (api.py) for the ingest routes' source_type. A Python worker given a MIME
// type turns it into "unknown", so the gateway must send these.

var moragTypes = map[string]bool{
	"document": true, "audio": true, "video": true, "image": true,
	"web": true, "youtube": true, "text": true, "unknown": true,
}

var mimeToMorag = map[string]string{
	"application/pdf":    "document",
	"application/msword": "document",
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   "document",
	"application/vnd.ms-powerpoint":                                             "document",
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": "document",
	"application/vnd.ms-excel":                                                  "document",
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         "document",
	"text/plain":      "document",
	"text/markdown":   "document",
	"text/html":       "document",
	"application/rtf": "document",

	"audio/mpeg":  "audio",
	"audio/mp3":   "audio",
	"audio/wav":   "audio",
	"audio/x-wav": "audio",
	"audio/mp4":   "audio",
	"audio/m4a":   "audio",
	"audio/x-m4a": "audio",
	"audio/flac":  "audio",
	"audio/ogg":   "audio",
	"audio/aac":   "audio",

	"video/mp4":        "video",
	"video/avi":        "video",
	"video/x-msvideo":  "video",
	"video/quicktime":  "video",
	"video/x-matroska": "video",
	"video/webm":       "video",
	"video/x-ms-wmv":   "video",
	"video/x-flv":      "video",

	"image/jpeg":    "image",
	"image/jpg":     "image",
	"image/png":     "image",
	"image/gif":     "image",
	"image/bmp":     "image",
	"image/webp":    "image",
	"image/tiff":    "image",
	"image/svg+xml": "image",
}

// normalizeContentType is server.py's normalize_content_type: "" stays
// unset (nil), MoRAG types pass (lower-cased, trimmed), known MIME types map
// to their MoRAG type and anything else becomes "document".
func normalizeContentType(ct string) any {
	if ct == "" {
		return nil
	}
	ct = strings.ToLower(strings.TrimSpace(ct))
	if moragTypes[ct] {
		return ct
	}
	if t, ok := mimeToMorag[ct]; ok {
		return t
	}
	return "document"
}

var suffixTypes = func() map[string]string {
	m := map[string]string{}
	for t, sufs := range map[string][]string{
		"document": {".pdf", ".doc", ".docx", ".txt", ".md", ".rtf", ".pptx", ".ppt", ".xlsx", ".xls", ".csv", ".json", ".xml"},
		"audio":    {".mp3", ".wav", ".flac", ".m4a", ".ogg", ".aac"},
		"video":    {".mp4", ".avi", ".mkv", ".mov", ".wmv", ".flv", ".webm"},
		"image":    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tiff", ".svg"},
		"web":      {".html", ".htm"},
	} {
		for _, s := range sufs {
			m[s] = t
		}
	}
	return m
}()

// pySuffix is pathlib's PurePath(p).suffix: the last element's extension,
// "" for dot files and names ending in a dot.
func pySuffix(p string) string {
	name := p
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return ""
	}
	return name[i:]
}

// detectFromFile is MoRAGAPI._detect_content_type_from_file: by the
// lower-cased suffix, "document" when unknown.
func detectFromFile(p string) string {
	if t, ok := suffixTypes[strings.ToLower(pySuffix(p))]; ok {
		return t
	}
	return "document"
}

// detectFromURL is MoRAGAPI._detect_content_type: YouTube hosts anywhere
// in the URL, any other http(s) URL is "web", the rest a file path.
func detectFromURL(u string) string {
	l := strings.ToLower(u)
	if strings.Contains(l, "youtube.com") || strings.Contains(l, "youtu.be") {
		return "youtube"
	}
	if strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://") {
		return "web"
	}
	return detectFromFile(u)
}
