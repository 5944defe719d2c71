# A p2pmr peer (or master) image. See docker-compose.yml for a cluster.
FROM python:3.11-slim
WORKDIR /opt/p2pmr
COPY setup.cfg pyproject.toml README.md ./
COPY p2pmr ./p2pmr
COPY examples ./examples
RUN pip install --no-cache-dir .
ENV P2PMR_REPO=/data
VOLUME /data
EXPOSE 4005
ENTRYPOINT ["p2pmr"]
CMD ["peer", "--listen", "/ip4/0.0.0.0/tcp/4005"]
