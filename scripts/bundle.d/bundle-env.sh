# Sourced by the bundle's bin/ scripts: sets B (the bundle's root) and the
# environment every bundled program runs with. Nothing outside the bundle
# is needed but glibc, the C++ runtime (see lib/compat) and, for the GPU,
# the NVIDIA driver.
B=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
export MORAG_BUNDLE="$B"
# The bundle's ffmpeg/ffprobe come first; the worker and gpu-check run
# "ffmpeg" and "ffprobe" from PATH.
case ":$PATH:" in *":$B/bin:"*) ;; *) export PATH="$B/bin${PATH:+:$PATH}" ;; esac
# libstdc++.so.6 and libgcc_s.so.1: the system's when they are new enough
# for the bundle's libraries (ldd reports a missing symbol version
# otherwise), else the copies in lib/compat (Debian 12's, GCC 12).
if [ -z "${MORAG_BUNDLE_COMPAT:-}" ]; then
  if LD_LIBRARY_PATH= ldd "$B/lib/libwhisper.so.1" "$B/lib/libmorag-ggml-load.so" 2>&1 | grep -q 'not found'; then
    MORAG_BUNDLE_COMPAT=1
  else
    MORAG_BUNDLE_COMPAT=0
  fi
  export MORAG_BUNDLE_COMPAT
fi
if [ "$MORAG_BUNDLE_COMPAT" = 1 ]; then
  export LD_LIBRARY_PATH="$B/lib/compat${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# Where the worker keeps downloaded whisper models (-whisper-model NAME).
export MORAG_BUNDLE_MODELS="${MORAG_BUNDLE_MODELS:-$B/models}"
