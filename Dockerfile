# Multi-stage: build a wheel with its dependencies, then a slim non-root runtime that applies
# migrations and serves. Configure with DATABASE_URL (PostgreSQL in real deployments).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runwatch ./runwatch
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 runwatch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER runwatch
WORKDIR /home/runwatch
ENV RUNWATCH_HOST=0.0.0.0 \
    RUNWATCH_PORT=8000 \
    DATABASE_URL=sqlite:///home/runwatch/runwatch.db
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["sh", "-c", "runwatch migrate && exec runwatch serve"]
