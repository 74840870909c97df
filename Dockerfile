# Multi-stage: build a wheel with its dependencies, then a slim non-root runtime.
# Configure with DATABASE_URL (PostgreSQL in real deployments; the default is the embedded SQLite
# file on the /data volume), PORT (or RUNWATCH_PORT) and RUNWATCH_BOOTSTRAP_TOKEN (an admin
# token of your choosing for organisation 1 on the first start: stored hashed, never printed).
# tests/test_image_steps.py performs these steps without Docker: keep the two in step.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runwatch ./runwatch
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 runwatch \
 && mkdir /data && chown runwatch:runwatch /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER runwatch
WORKDIR /home/runwatch
ENV RUNWATCH_HOST=0.0.0.0 \
    PORT=8000 \
    RUNWATCH_HOME=/data \
    DATABASE_URL=sqlite:///data/runwatch.db
VOLUME /data
EXPOSE 8000
# Readiness on whatever port the container is told to use (RUNWATCH_PORT, else PORT).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('RUNWATCH_PORT') or os.environ.get('PORT') or '8000'; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=4).status != 200)"]
# `serve` applies pending migrations first (`runwatch migrate` alone in a release job works too).
CMD ["runwatch", "serve"]
