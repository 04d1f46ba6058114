# The engine's one image: `python worker.py` (the default), `python -m billing.codec_server`, `python starter.py ...`.
# Two stages: the build stage installs the package into a virtualenv and compiles its bytecode; the run stage has
# that virtualenv and nothing that installs (tests/test_deployment.py reproduces the install and checks this).

FROM python:3.11-slim AS build
RUN python -m venv /opt/billing
WORKDIR /src
COPY pyproject.toml README.md ./
COPY billing billing
COPY activities activities
COPY workflows workflows
COPY cli cli
COPY worker.py starter.py ./
# A wheel build (not editable): what is not declared as a package or package data (notice templates, the ledger's
# Alembic migrations) is missing here, as it would be on any other machine.
RUN /opt/billing/bin/pip install --no-cache-dir --no-compile . \
    && /opt/billing/bin/python -m compileall -q /opt/billing/lib

FROM python:3.11-slim
ENV PATH=/opt/billing/bin:$PATH \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/billing /opt/billing
WORKDIR /app
# `python worker.py` and `python starter.py` run the files in /app (the same modules the package installs).
COPY worker.py starter.py ./
# Bytecode is compiled here, as root: the service user cannot write beside the sources, so without it every
# start would compile every module again in memory.
RUN python -m compileall -q /app \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home billing \
    && mkdir /app/var \
    && chown billing:billing /app/var
# The only writable place: the default outbox and SQLite ledger under var/ (production uses SMTP and PostgreSQL).
USER 10001:10001
EXPOSE 8081 9464
CMD ["python", "worker.py"]
