# tvq-serve container image (docs/deploy.md).
#
# Two variants, chosen with --target:
#   cpu (the default, last stage): Debian 12 bookworm-slim, OpenBLAS backend.
#     docker build -t tvq-serve:cpu .
#   gpu: NVIDIA CUDA on Ubuntu 24.04 (the same gRPC 1.51, Protobuf 3.21 and
#     Abseil 20220623 packages as Debian 12), CUDA and CPU backends.
#     docker build --target gpu -t tvq-serve:gpu .
#     The CUDA base is a build argument: --build-arg CUDA_VERSION=13.0.0, or
#     CUDA_DEVEL_IMAGE / CUDA_RUNTIME_IMAGE for another registry or mirror;
#     CUDA_ARCHITECTURES (default 90 = H100/H200) picks the GPU code.
#
# Each variant is a build stage (compilers and -dev packages) and a slim
# runtime stage: tvq-server, tvq-client, the plug-in modules the server
# loads (SentencePiece; the CUDA backend in the GPU image), the packages that
# own their shared libraries, and the default model (the repository's
# models/demo) at /models/default. Mount other models under /models and pass
# --model.
#
# The entrypoint is tvq-server with flags for a container (listen on all
# interfaces); arguments after the image name are appended, and a flag given
# again overrides the earlier value:
#   docker run -p 50051:50051 -p 9464:9464 tvq-serve:cpu --num-slots=32

ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
ARG CUDA_VERSION=13.0.0
ARG CUDA_DEVEL_IMAGE=docker.io/nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=docker.io/nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04

# ------------------------------------------------------------- build: GPU
FROM ${CUDA_DEVEL_IMAGE} AS build-gpu
ARG BUILD_JOBS=
ARG CUDA_ARCHITECTURES=90
COPY deploy/docker/build-packages.txt /tmp/build-packages.txt
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends $(cat /tmp/build-packages.txt) \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN BUILD_JOBS=${BUILD_JOBS} sh deploy/docker/build-and-stage.sh /out \
      -DTVQ_WITH_CUDA=ON \
      -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
      -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}

# ------------------------------------------------------------- build: CPU
FROM ${DEBIAN_IMAGE} AS build-cpu
ARG BUILD_JOBS=
COPY deploy/docker/build-packages.txt /tmp/build-packages.txt
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends $(cat /tmp/build-packages.txt) \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN BUILD_JOBS=${BUILD_JOBS} sh deploy/docker/build-and-stage.sh /out \
      -DTVQ_WITH_CUDA=OFF

# ----------------------------------------------------------- runtime: GPU
FROM ${CUDA_RUNTIME_IMAGE} AS gpu
COPY --from=build-gpu /out/runtime-packages.txt /tmp/runtime-packages.txt
COPY deploy/docker/install-runtime.sh deploy/docker/check-runtime.sh /tmp/
RUN sh /tmp/install-runtime.sh /tmp/runtime-packages.txt 10001
COPY --from=build-gpu /out/root/ /
COPY models/demo/ /models/default/
RUN ldconfig && sh /tmp/check-runtime.sh && rm /tmp/*.sh /tmp/*.txt
USER 10001:10001
WORKDIR /models
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["tvq-client", "--addr=127.0.0.1:50051", "--timeout=4", "health"]
ENTRYPOINT ["tvq-server", "--model=/models/default", "--device=auto", \
            "--listen=0.0.0.0:50051", "--metrics-address=0.0.0.0:9464"]
CMD []

# ----------------------------------------------------------- runtime: CPU
FROM ${DEBIAN_IMAGE} AS cpu
COPY --from=build-cpu /out/runtime-packages.txt /tmp/runtime-packages.txt
COPY deploy/docker/install-runtime.sh deploy/docker/check-runtime.sh /tmp/
RUN sh /tmp/install-runtime.sh /tmp/runtime-packages.txt 10001
COPY --from=build-cpu /out/root/ /
COPY models/demo/ /models/default/
RUN ldconfig && sh /tmp/check-runtime.sh && rm /tmp/*.sh /tmp/*.txt
USER 10001:10001
WORKDIR /models
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["tvq-client", "--addr=127.0.0.1:50051", "--timeout=4", "health"]
ENTRYPOINT ["tvq-server", "--model=/models/default", "--device=cpu", \
            "--listen=0.0.0.0:50051", "--metrics-address=0.0.0.0:9464"]
CMD []
