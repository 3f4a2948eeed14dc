"""TvqClient: generate (streaming and unary), score, tokenize, info, and
sessions (create, append, fork, export, import, get, list, close)."""

import os

import grpc

try:
    from tvq.v1 import tvq_pb2, tvq_pb2_grpc
except ImportError as error:  # pragma: no cover - depends on the build
    raise ImportError(
        "tvq_client needs the generated stubs tvq/v1/tvq_pb2.py and "
        "tvq_pb2_grpc.py: build the project (CMake target tvq_client_python) "
        "and add <build>/client/python to PYTHONPATH") from error

# GenerateRequest fields a caller may set by keyword (the prompt is given
# separately, as text or token_ids).
_GENERATE_FIELDS = (
    "no_eos_prefix", "temperature", "top_k", "top_p", "min_p",
    "repetition_penalty", "presence_penalty", "frequency_penalty", "seed",
    "max_new_tokens", "stop", "stop_token_ids", "ignore_eos", "logprobs",
    "top_logprobs", "request_id", "session_id")

# ExportSession / ImportSession chunk size (the server's limit).
_CHUNK_BYTES = 1 << 20


def finish_reason_name(reason):
    """"length", "stop_sequence", "eos", "stop_token", "cancelled" (as
    tvq-client prints them) for a FinishReason value."""
    return tvq_pb2.FinishReason.Name(reason).removeprefix(
        "FINISH_REASON_").lower()


class TvqError(Exception):
    """A failed call: the gRPC status code and the server's message."""

    def __init__(self, code, details):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, error):
        return cls(error.code(), error.details())


def _prompt_fields(text, token_ids, what, optional=False):
    if optional and text is None and token_ids is None:
        return {}
    if (text is None) == (token_ids is None):
        raise ValueError(f"give the {what} as text or as token_ids (exactly "
                         "one of them)")
    if text is not None:
        return {"text": text}
    return {"token_ids": tvq_pb2.TokenIds(ids=list(token_ids))}


def _generate_request(text, token_ids, options):
    unknown = sorted(set(options) - set(_GENERATE_FIELDS))
    if unknown:
        raise TypeError(f"unknown generate option(s): {', '.join(unknown)}; "
                        f"known: {', '.join(_GENERATE_FIELDS)}")
    fields = {name: value for name, value in options.items()
              if value is not None}
    # Inside a session the prompt may be empty (the session supplies it).
    fields.update(_prompt_fields(text, token_ids, "prompt",
                                 optional=bool(options.get("session_id"))))
    return tvq_pb2.GenerateRequest(**fields)


class GenerateStream:
    """The messages of one GenerateStream call, as an iterator.

    Iterating yields GenerateStreamResponse messages; the last one carries
    finish_reason and usage. cancel() ends the call (the server stops within
    one scheduler step); the iteration then raises TvqError(CANCELLED).
    """

    def __init__(self, call):
        self._call = call

    def __iter__(self):
        try:
            yield from self._call
        except grpc.RpcError as error:
            raise TvqError.from_rpc_error(error) from None

    def cancel(self):
        self._call.cancel()


class _ApiKeyInterceptor(grpc.UnaryUnaryClientInterceptor,
                         grpc.UnaryStreamClientInterceptor,
                         grpc.StreamUnaryClientInterceptor,
                         grpc.StreamStreamClientInterceptor):
    """Adds "authorization: Bearer KEY" to every call."""

    def __init__(self, key):
        self._entry = ("authorization", f"Bearer {key}")

    def _with_key(self, details):
        metadata = list(details.metadata or ()) + [self._entry]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_key(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_key(details), requests)


def _read(path):
    with open(path, "rb") as file:
        return file.read()


class TvqClient:
    """A connection to one tvq-server.

    address: HOST:PORT of the gRPC endpoint. timeout: default deadline of
    each call in seconds (None = no deadline); every method also takes
    timeout=. Errors are raised as TvqError.

    TLS (docs/security.md): tls_ca, the path of the PEM CA bundle that
    signed the server's certificate (None with tls=True: the system's
    roots); tls_cert and tls_key, a client certificate and its key for
    mutual TLS; tls_server_name, the name to check the server's
    certificate against instead of the host of `address`. Any of them
    means TLS. api_key: sent as "authorization: Bearer KEY" on every call
    (None: the TVQ_API_KEY environment variable, if set).
    """

    def __init__(self, address="127.0.0.1:50051", timeout=None, *,
                 tls=False, tls_ca=None, tls_cert=None, tls_key=None,
                 tls_server_name=None, api_key=None):
        self._timeout = timeout
        options = [("grpc.max_receive_message_length", -1)]
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if tls or tls_ca or tls_cert or tls_server_name:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca) if tls_ca else None,
                private_key=_read(tls_key) if tls_key else None,
                certificate_chain=_read(tls_cert) if tls_cert else None)
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override",
                                tls_server_name))
            self._channel = grpc.secure_channel(address, credentials, options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        if api_key is None:
            api_key = os.environ.get("TVQ_API_KEY")
        if api_key:
            self._channel = grpc.intercept_channel(
                self._channel, _ApiKeyInterceptor(api_key))
        self._stub = tvq_pb2_grpc.TextGenerationStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def wait_until_ready(self, timeout=10.0):
        """Waits until the channel is connected (raises TvqError otherwise)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise TvqError(grpc.StatusCode.UNAVAILABLE,
                           f"no connection within {timeout} s") from None

    def _call(self, method, request, timeout):
        try:
            return method(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise TvqError.from_rpc_error(error) from None

    def _deadline(self, timeout):
        return self._timeout if timeout is None else timeout

    def info(self, timeout=None):
        """GetModelInfoResponse: model, tokenizer, slots, backend, limits."""
        return self._call(self._stub.GetModelInfo,
                          tvq_pb2.GetModelInfoRequest(), timeout)

    def generate(self, text=None, *, token_ids=None, timeout=None,
                 **options):
        """Unary Generate: returns the whole GenerateResponse.

        options are GenerateRequest fields by name (temperature, top_k,
        top_p, min_p, repetition_penalty, presence_penalty,
        frequency_penalty, seed, max_new_tokens, stop, stop_token_ids,
        ignore_eos, logprobs, top_logprobs, no_eos_prefix, request_id);
        None leaves the server's default.
        """
        request = _generate_request(text, token_ids, options)
        return self._call(self._stub.Generate, request, timeout)

    def generate_stream(self, text=None, *, token_ids=None, timeout=None,
                        **options):
        """GenerateStream: a GenerateStream iterator (see generate())."""
        request = _generate_request(text, token_ids, options)
        return GenerateStream(self._stub.GenerateStream(
            request, timeout=self._deadline(timeout)))

    def score(self, text=None, *, token_ids=None, no_eos_prefix=False,
              top_logprobs=0, session_id="", timeout=None):
        """Score: ScoreResponse whose token_logprobs[i] scores
        token_ids[i + 1] given token_ids[0..i]. With session_id, the input
        is scored after the session's tokens (docs/sessions.md)."""
        request = tvq_pb2.ScoreRequest(
            no_eos_prefix=no_eos_prefix, top_logprobs=top_logprobs,
            session_id=session_id,
            **_prompt_fields(text, token_ids, "sequence"))
        return self._call(self._stub.Score, request, timeout)

    def tokenize(self, text, *, no_eos_prefix=False, timeout=None):
        """Token ids of text (eos_id first unless no_eos_prefix)."""
        request = tvq_pb2.TokenizeRequest(text=text,
                                          no_eos_prefix=no_eos_prefix)
        return list(self._call(self._stub.Tokenize, request,
                               timeout).token_ids)

    def detokenize(self, token_ids, *, timeout=None):
        """Text of token ids (special tokens produce no text)."""
        request = tvq_pb2.DetokenizeRequest(token_ids=list(token_ids))
        return self._call(self._stub.Detokenize, request, timeout).text

    # ---- sessions (docs/sessions.md); each returns a tvq.v1.Session unless
    # said otherwise.

    def create_session(self, text=None, *, token_ids=None, session_id="",
                       ttl_seconds=0, pinned=False, no_eos_prefix=False,
                       timeout=None):
        """A new session, prefilled with the optional prompt."""
        request = tvq_pb2.CreateSessionRequest(
            session_id=session_id, ttl_seconds=ttl_seconds, pinned=pinned,
            no_eos_prefix=no_eos_prefix,
            **_prompt_fields(text, token_ids, "prompt", optional=True))
        return self._call(self._stub.CreateSession, request, timeout)

    def append_to_session(self, session_id, text=None, *, token_ids=None,
                          no_eos_prefix=False, timeout=None):
        """Prefills more tokens into the session."""
        request = tvq_pb2.AppendToSessionRequest(
            session_id=session_id, no_eos_prefix=no_eos_prefix,
            **_prompt_fields(text, token_ids, "prompt"))
        return self._call(self._stub.AppendToSession, request, timeout)

    def fork_session(self, session_id, new_session_id="", *, timeout=None):
        """An independent copy of the session."""
        request = tvq_pb2.ForkSessionRequest(session_id=session_id,
                                             new_session_id=new_session_id)
        return self._call(self._stub.ForkSession, request, timeout)

    def export_session(self, session_id, *, timeout=None):
        """The session's blob as bytes."""
        request = tvq_pb2.ExportSessionRequest(session_id=session_id)
        try:
            chunks = self._stub.ExportSession(
                request, timeout=self._deadline(timeout))
            return b"".join(chunk.data for chunk in chunks)
        except grpc.RpcError as error:
            raise TvqError.from_rpc_error(error) from None

    def import_session(self, blob, session_id="", *, timeout=None):
        """A new session from a blob (bytes), under session_id or a
        server-made id."""
        def chunks():
            yield tvq_pb2.SessionChunk(data=bytes(blob[:_CHUNK_BYTES]),
                                       session_id=session_id)
            for offset in range(_CHUNK_BYTES, len(blob), _CHUNK_BYTES):
                yield tvq_pb2.SessionChunk(
                    data=bytes(blob[offset:offset + _CHUNK_BYTES]))
        try:
            return self._stub.ImportSession(chunks(),
                                            timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise TvqError.from_rpc_error(error) from None

    def get_session(self, session_id, *, timeout=None):
        request = tvq_pb2.GetSessionRequest(session_id=session_id)
        return self._call(self._stub.GetSession, request, timeout)

    def list_sessions(self, *, timeout=None):
        """Every session (a list of Session), ordered by id."""
        return list(self._call(self._stub.ListSessions,
                               tvq_pb2.ListSessionsRequest(),
                               timeout).sessions)

    def close_session(self, session_id, *, timeout=None):
        request = tvq_pb2.CloseSessionRequest(session_id=session_id)
        self._call(self._stub.CloseSession, request, timeout)
