"""gRPC C-core's own xDS-enabled *server* (through Python grpcio) serving echo.Echo.

The bootstrap comes from GRPC_XDS_BOOTSTRAP_CONFIG, set by the Rust test that starts this
script; its `server_listener_resource_name_template` names the inbound Listener the server
subscribes to. Transport security and RBAC come from that Listener (xDS server credentials,
plaintext fallback for a chain without TLS). Until the Listener arrives the server is "not
serving" (it closes connections). Prints "started" once the port is bound, then runs until
killed.

    python grpcio_server.py --port 50051
"""

import argparse
import sys
import time
from concurrent import futures

import grpc


def echo(shout: bool):
    def handler(request: bytes, context) -> bytes:
        # EchoRequest and EchoReply share field 1 (message); echo the request back.
        if shout:
            return request.upper()
        return request

    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=None,
        response_serializer=None,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), xds=True)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "echo.Echo", {"Say": echo(False), "Shout": echo(True)}
            ),
        )
    )
    credentials = grpc.xds_server_credentials(grpc.insecure_server_credentials())
    server.add_secure_port(f"127.0.0.1:{args.port}", credentials)
    server.start()
    print("started", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
