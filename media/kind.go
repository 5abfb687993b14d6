package media

import (
	"net/url"
	"path"
	"path/filepath"
	"strings"
)

// Kind is what a MoRAG input is, as far as the media pipeline is concerned:
// the Go worker decides with it what it processes itself and what it hands
// to a Python worker, and the gateway what a task will need.
type Kind int

const (
	KindUnknown Kind = iota // find out by probing the file
	KindAudio
	KindVideo
	KindOther // documents, images, web pages: a Python worker's job
)

func (k Kind) String() string {
	switch k {
	case KindAudio:
		return "audio"
	case KindVideo:
		return "video"
	case KindOther:
		return "other"
	}
	return "unknown"
}

// KindFromContentType reads a task's content_type argument, which is a MIME
// type or a MoRAG type (audio, video, document, image, web, youtube, ...).
func KindFromContentType(ct string) Kind {
	ct = strings.ToLower(strings.TrimSpace(ct))
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = strings.TrimSpace(ct[:i])
	}
	if ct == "" {
		return KindUnknown
	}
	major, _, isMIME := strings.Cut(ct, "/")
	if !isMIME {
		switch ct {
		case "audio":
			return KindAudio
		case "video":
			return KindVideo
		}
		return KindOther
	}
	switch {
	case major == "audio":
		return KindAudio
	case major == "video":
		return KindVideo
	case ct == "application/octet-stream", ct == "application/ogg", ct == "application/mp4",
		ct == "application/x-matroska", ct == "binary/octet-stream":
		// Says nothing about what is inside: probe it.
		return KindUnknown
	}
	return KindOther
}

// Extensions decide without a download when the content type is missing.
// A container extension is only a hint; the probe has the last word.
var (
	audioExts = map[string]bool{".mp3": true, ".wav": true, ".m4a": true, ".aac": true, ".flac": true,
		".oga": true, ".opus": true, ".wma": true, ".aiff": true, ".aif": true, ".amr": true}
	videoExts = map[string]bool{".mp4": true, ".m4v": true, ".mov": true, ".mkv": true, ".webm": true,
		".avi": true, ".wmv": true, ".flv": true, ".mpeg": true, ".mpg": true, ".ts": true, ".mts": true,
		".m2ts": true, ".3gp": true, ".ogv": true}
	otherExts = map[string]bool{".pdf": true, ".doc": true, ".docx": true, ".txt": true, ".md": true,
		".html": true, ".htm": true, ".rtf": true, ".odt": true, ".ppt": true, ".pptx": true, ".xls": true,
		".xlsx": true, ".csv": true, ".json": true, ".xml": true, ".epub": true, ".png": true, ".jpg": true,
		".jpeg": true, ".gif": true, ".bmp": true, ".tif": true, ".tiff": true, ".webp": true, ".svg": true}
)

// KindFromName classifies by file extension; KindUnknown when it says nothing.
func KindFromName(name string) Kind {
	ext := strings.ToLower(filepath.Ext(name))
	switch {
	case audioExts[ext]:
		return KindAudio
	case videoExts[ext]:
		return KindVideo
	case otherExts[ext]:
		return KindOther
	}
	return KindUnknown
}

// KindFromURL is KindFromName of a URL's path.
func KindFromURL(raw string) Kind {
	u, err := url.Parse(raw)
	if err != nil {
		return KindUnknown
	}
	return KindFromName(path.Base(u.Path))
}
