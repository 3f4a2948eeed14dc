#!/usr/bin/python3
"""Host-side gRPC checks of deploy/container-smoke.sh.

Waits until grpc.health.v1.Health/Check answers SERVING, then runs one
tvq.v1.TextGeneration/Generate call and prints both results. Needs the Python
stubs of tvq/v1/tvq.proto and smoke_health/health.proto (grpc.health.v1) on
PYTHONPATH
(container-smoke.sh generates them with protoc).

Exit status: 0 when both checks pass, 1 otherwise (the reason on stderr).
"""

import argparse
import os
import sys
import time

import grpc

from smoke_health import health_pb2
from smoke_health import health_pb2_grpc
from tvq.v1 import tvq_pb2
from tvq.v1 import tvq_pb2_grpc

PROMPT = "The container says"
MAX_NEW_TOKENS = 24
SEED = 7


def process_alive(pid):
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_serving(channel, wait_seconds, server_pid):
    stub = health_pb2_grpc.HealthStub(channel)
    give_up_at = time.monotonic() + wait_seconds
    last = "no answer"
    while time.monotonic() < give_up_at:
        if not process_alive(server_pid):
            raise RuntimeError("the server process exited before it was SERVING")
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return last
        except grpc.RpcError as error:
            last = f"{error.code().name}: {error.details()}"
        time.sleep(0.5)
    raise RuntimeError(f"not SERVING after {wait_seconds} s (last answer: {last})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="HOST:PORT of tvq-server")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for SERVING")
    parser.add_argument("--server-pid", type=int, default=0,
                        help="stop waiting when this process exits")
    args = parser.parse_args()

    channel = grpc.insecure_channel(args.addr)
    started = time.monotonic()
    try:
        status = wait_serving(channel, args.wait, args.server_pid)
    except RuntimeError as error:
        print(f"health: FAIL: {error}", file=sys.stderr)
        return 1
    print(f"health: grpc.health.v1.Health/Check = {status} "
          f"(after {time.monotonic() - started:.1f} s)")

    stub = tvq_pb2_grpc.TextGenerationStub(channel)
    info = stub.GetModelInfo(tvq_pb2.GetModelInfoRequest(), timeout=10)
    print("model: " + " ".join(str(info).split()))

    request = tvq_pb2.GenerateRequest(text=PROMPT, max_new_tokens=MAX_NEW_TOKENS,
                                      seed=SEED, temperature=0.8)
    try:
        started = time.monotonic()
        response = stub.Generate(request, timeout=60)
    except grpc.RpcError as error:
        print(f"generate: FAIL: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    reason = tvq_pb2.FinishReason.Name(response.finish_reason)
    print(f"generate: prompt {PROMPT!r} -> {len(response.token_ids)} tokens in "
          f"{elapsed:.2f} s, {reason}: {response.text!r}")
    if not response.token_ids:
        print("generate: FAIL: no tokens generated", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
