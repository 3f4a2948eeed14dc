"""Python client of tvq-server (the tvq.v1.TextGeneration gRPC API).

    from tvq_client import TvqClient
    with TvqClient("127.0.0.1:50051") as client:
        for chunk in client.generate_stream("Hello", max_new_tokens=32):
            print(chunk.text, end="", flush=True)

The gRPC stubs (tvq/v1/tvq_pb2.py, tvq_pb2_grpc.py) are generated at build
time into <build>/client/python; put that directory and client/python on
PYTHONPATH.
"""

from tvq_client.client import (GenerateStream, TvqClient, TvqError,
                               finish_reason_name, tvq_pb2)

__all__ = ["GenerateStream", "TvqClient", "TvqError", "finish_reason_name",
           "tvq_pb2"]
