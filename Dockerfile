# Kiln, CPU image. Build: docker build -t kiln .   Run: docker compose up (compose.yaml), or
#   docker run -p 8080:8080 -v kiln-data:/data -v /path/to/models:/models -e KILN_MODEL=... -e KILN_API_KEYS=... kiln
# The image runs `kiln serve` as the unprivileged `node` user; models and data are volumes.

# Stage 1: production dependencies (native modules are compiled here, with the toolchain that stays behind).
FROM node:20-bookworm-slim AS deps
WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# The CPU build of onnxruntime ships inside its package: skip its installer's CUDA download.
ENV ONNXRUNTIME_NODE_INSTALL=skip
RUN npm ci --omit=dev

# Stage 2: the runtime image.
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    KILN_HOST=0.0.0.0 \
    KILN_PORT=8080 \
    KILN_DATA_DIR=/data \
    KILN_MODELS_DIR=/models \
    HF_HOME=/data/huggingface
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json LICENSE README.md ./
COPY bin ./bin
COPY src ./src
# /results: the shared result folder of compose.scale.yaml (a named volume takes this owner when first mounted).
RUN mkdir -p /data /models /results && chown node:node /data /models /results
USER node
VOLUME ["/data", "/models"]
EXPOSE 8080
# /ready: the engine is up and the default model loaded (the first start of a real model takes a while).
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.KILN_PORT||8080)+'/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "bin/kiln.js"]
CMD ["serve"]
