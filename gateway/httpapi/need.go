package httpapi

import (
	"context"
	"errors"
	"time"

	"morag-gpu/auth"
	"morag-gpu/media"
)

// probeTimeout bounds the ffprobe run that tells whether an uploaded video
// has sound; it reads the container's headers, milliseconds for any size.
const probeTimeout = 10 * time.Second

// uploadNeed says what finishing an uploaded file takes: a transcript for
// audio, and for video with an audio track. It classifies as the Go worker
// does (content_type, then the file name) and probes video and unknown
// kinds with ffprobe (hardened and bounded as the worker's runs are);
// without ffprobe a video is taken to have sound, so that it never lands on
// a worker that could only hand it on.
func uploadNeed(ctx context.Context, path, name, contentType string) auth.Need {
	k := media.KindFromContentType(contentType)
	if k == media.KindUnknown {
		k = media.KindFromName(name)
	}
	switch k {
	case media.KindAudio:
		return auth.Need{Transcript: true, What: "audio"}
	case media.KindOther:
		return auth.Need{}
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	info, err := (&media.Tools{}).Probe(ctx, path)
	switch {
	case errors.Is(err, media.ErrToolMissing) && k == media.KindVideo:
		return auth.Need{Transcript: true, What: "video (not probed: no ffprobe here; taken to have sound)"}
	case err != nil:
		// Unreadable, refused or over a limit: no transcript will come of
		// it wherever it goes, and the worker's error says why.
		return auth.Need{}
	case info.HasVideo() && info.HasAudio():
		return auth.Need{Transcript: true, What: "video with an audio track"}
	case info.HasAudio():
		return auth.Need{Transcript: true, What: "audio"}
	}
	return auth.Need{}
}

// urlNeed is uploadNeed for a URL nobody has downloaded yet: the content
// type or the URL's file name decide, and a video is taken to have sound.
func urlNeed(rawURL, contentType string) auth.Need {
	k := media.KindFromContentType(contentType)
	if k == media.KindUnknown {
		k = media.KindFromURL(rawURL)
	}
	switch k {
	case media.KindAudio:
		return auth.Need{Transcript: true, What: "audio"}
	case media.KindVideo:
		return auth.Need{Transcript: true, What: "video (by its URL; taken to have sound)"}
	}
	return auth.Need{}
}
