#!/usr/bin/env bash
# Download into ./.whl-serve (git-ignored) the wheels that the offline GPU machine (Python 3.12) lacks for the
# serving benches: kernelkit serve (FastAPI, uvicorn, pydantic) and the openai client of benches/serve_load.py,
# with the newer anyio/idna/typing-extensions/h11 they need (sitecustomize puts them ahead of the image's).
# Usage, from the project root: scripts/fetch_serve_wheels.sh; then carry [".whl", ".whl-serve"].
set -euo pipefail
grep -qx '/.whl*/' .git/info/exclude 2>/dev/null || echo '/.whl*/' >> .git/info/exclude
mkdir -p .whl-serve
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl-serve \
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 \
  annotated-doc==0.0.7 typing-inspection==0.4.2 opentelemetry-api==1.45.2 openai==3.54.0 jiter==0.19.0 \
  httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 sniffio==1.3.1 anyio==4.16.0 idna==3.20 \
  typing-extensions==4.16.0 h11==0.16.0
du -sh .whl-serve
