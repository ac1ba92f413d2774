# The parity-gate image: the official vLLM image at the version under test,
# plus the gate. Built per vLLM version (action.yml builds it from this file
# when no prebuilt `image` is given).
#
#   docker build --build-arg VLLM_VERSION=0.32.0 -t parity-gate:vllm-0.32.0 .
#
# BASE_IMAGE overrides the base (a mirror, a digest-pinned tag, or the local
# stand-in the container test builds, see scripts/build-test-image.sh). The
# base must carry python3 with pip, and vLLM for `check` (the gate's other
# dependencies, numpy, pyyaml, jinja2, requests and pydantic 2, come with vLLM).
ARG VLLM_VERSION=0.32.0
ARG BASE_IMAGE=vllm/vllm-openai:v${VLLM_VERSION}
FROM ${BASE_IMAGE}

ARG VLLM_VERSION
LABEL org.opencontainers.image.title="parity-gate" \
      org.opencontainers.image.description="CI gate for logprob drift in vLLM" \
      io.parity-gate.vllm-version="${VLLM_VERSION}"

# Only what the wheel needs (.dockerignore keeps the rest of the tree out).
COPY pyproject.toml README.md /tmp/parity-gate-src/
COPY gate /tmp/parity-gate-src/gate
COPY templates /tmp/parity-gate-src/templates

# --no-deps: the base already carries vLLM and everything the gate imports, and
# pip must never swap the base's torch/vllm. --no-build-isolation: build with
# the base's setuptools, so the build works without an index.
# One RUN so the sources do not stay in a layer of their own.
RUN python3 -m pip install --no-cache-dir --no-deps --no-build-isolation /tmp/parity-gate-src \
 && rm -rf /tmp/parity-gate-src \
 && python3 -c "import gate.cli, gate.action, gate.github.publish, gate.core.models, gate.core.policy_model" \
 && (id -u gate >/dev/null 2>&1 || useradd --uid 10001 --create-home --shell /usr/sbin/nologin gate)

# Caches (torch, triton, HF) go under HOME; action.yml runs the container with
# the runner's uid, which may have no home in the image, so give it one.
ENV HOME=/tmp/parity-gate-home \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER gate
ENTRYPOINT ["parity-gate", "action"]
