// Package media is the Go worker's ffmpeg layer: it probes files, decodes
// audio to the 16 kHz mono float32 PCM whisper wants, makes thumbnails and
// keyframes, and transcodes a 720p proxy. Every operation picks the GPU path
// (NVDEC decode, scale_cuda, NVENC encode) only when Detect proved it works
// on this machine, and falls back to the CPU path otherwise, so the same
// binary runs on an H100 (NVDEC, no NVENC), an L4 (both) or a laptop.
//
// The layers are:
//
//   - run.go: one ffmpeg/ffprobe process with a context, the tail of its
//     stderr and the classification of its failure (errors.go).
//   - child.go: the bounds of every process on user input: own process
//     group, Pdeathsig, prlimit (memory, CPU, file size), wall clock.
//   - formats.go: the accepted containers; every input is one local file
//     opened only with one of them.
//   - limits.go: Limits (resolution, duration, streams, metadata, packets,
//     memory, time, proxy size) and LimitError, which names the flag.
//   - probe.go: ffprobe JSON to Info.
//   - gpu.go: Detect, which tests each GPU capability with a real run.
//   - audio.go: StreamPCM and DecodePCM, PCM piped from ffmpeg's stdout.
//   - frames.go: Thumbnails and Keyframes.
//   - transcode.go: Transcode, the proxy video.
//
// Nothing here keeps state between calls: Tools holds the binaries, the
// detected Capabilities and the Limits, and every temporary file lives in a
// directory (under Tools.TempDir) that the operation that made it removes
// before it returns.
package media
