# A p2pmr peer (or master) image. See docker-compose.yml for a cluster.
#
#   docker build -t p2pmr .
#   docker build -t p2pmr --build-arg BASE=p2pmr-base:bookworm .   # scripts/docker-base.sh
#
# BASE is any Debian-based image with python3 (>= 3.11) and its venv module.
# Certificates (*.crt, PEM) put in docker/extra-ca/ are trusted while building,
# for pip behind a TLS-intercepting proxy; they stay out of the final image.

ARG BASE=python:3.11-slim

# ---- builder: a venv with p2pmr and its pinned dependencies -------------------
FROM ${BASE} AS builder
# libp2p pins fastecdsa, which has no wheel: it needs a C compiler, Python's
# headers (Debian's python3-dev when BASE's Python has none) and GMP's.
RUN set -eu; \
    pkgs="gcc libc6-dev libgmp-dev ca-certificates"; \
    python3 -c 'import os, sys, sysconfig; \
        sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || pkgs="$pkgs python3-dev"; \
    apt-get update -q; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*
COPY docker/extra-ca/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates >/dev/null 2>&1
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Dependencies first, from the metadata alone (an empty package stands in for
# the code), so a change to the code does not rebuild them. Every package,
# pip and the build tools included, is at its version in constraints.txt.
COPY constraints.txt setup.cfg pyproject.toml README.md ./
RUN mkdir p2pmr && touch p2pmr/__init__.py && \
    python3 -m venv /opt/venv && \
    /opt/venv/bin/pip install -q -c constraints.txt pip && \
    /opt/venv/bin/pip install -q -c constraints.txt --build-constraint constraints.txt . && \
    rm -rf p2pmr build *.egg-info
COPY p2pmr ./p2pmr
RUN /opt/venv/bin/pip install -q --no-deps -c constraints.txt \
        --build-constraint constraints.txt . && \
    /opt/venv/bin/p2pmr --help >/dev/null

# ---- runtime -----------------------------------------------------------------
FROM ${BASE}
# fastecdsa links against GMP at run time (Debian's coreutils already needs it).
RUN if ! ldconfig -p | grep -q 'libgmp\.so\.10 '; then \
        apt-get update -q && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libgmp10 && \
        rm -rf /var/lib/apt/lists/*; \
    fi && \
    useradd --uid 1000 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin p2pmr && \
    mkdir /data && chown p2pmr:p2pmr /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /opt/p2pmr
COPY examples ./examples
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    P2PMR_REPO=/data
# A named volume mounted here starts as a copy of this directory, owned by p2pmr.
VOLUME /data
USER p2pmr
EXPOSE 4005
ENTRYPOINT ["p2pmr"]
CMD ["peer", "--listen", "/ip4/0.0.0.0/tcp/4005"]
