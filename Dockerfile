FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY billing billing
COPY activities activities
COPY workflows workflows
COPY cli cli
COPY worker.py starter.py ./
RUN pip install --no-cache-dir .
USER nobody
CMD ["python", "worker.py"]
