"""gRPC C-core's own xDS client (through Python grpcio) calling echo.Echo/Say on an xds:/// target.

The bootstrap comes from GRPC_XDS_BOOTSTRAP, set by the Rust test that starts this script.
Prints one JSON object: replies per version, calls per status name, and a sample message per
failing status. Exit code 0 unless the script itself fails (the statuses are the result).

    python grpcio_client.py xds:///echo.default.svc.cluster.local:50051 --calls 1000

Several targets are called in turn, each with --calls calls (one xDS client serves them all).
"""

import argparse
import json
import sys

import grpc


def encode_request(message: str) -> bytes:
    data = message.encode()
    return b"\x0a" + bytes([len(data)]) + data  # field 1, length-delimited (short messages)


def decode_strings(data: bytes) -> dict:
    """The length-delimited fields of a protobuf message, by field number (strings only)."""
    fields, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, i = read_varint(data, i)
            fields[number] = data[i : i + length].decode(errors="replace")
            i += length
        elif wire == 0:
            _, i = read_varint(data, i)
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return fields


def read_varint(data: bytes, i: int):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[], help="name=value")
    args = parser.parse_args()
    metadata = [tuple(h.split("=", 1)) for h in args.header]

    by_version, by_status, errors = {}, {}, {}
    for target in args.targets:
        call(target, args, metadata, by_version, by_status, errors)
    json.dump({"by_version": by_version, "by_status": by_status, "errors": errors}, sys.stdout)
    print()
    return 0


def call(target, args, metadata, by_version, by_status, errors):
    with grpc.insecure_channel(target) as channel:
        say = channel.unary_unary(
            "/echo.Echo/Say",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        # The first call waits for xDS to resolve the target.
        for n in range(args.calls):
            try:
                reply = say(
                    encode_request("hello"),
                    timeout=args.timeout,
                    metadata=metadata,
                    wait_for_ready=(n == 0),
                )
                fields = decode_strings(reply)
                version = f"{fields.get(2, '')}/{fields.get(3, '')}"
                by_version[version] = by_version.get(version, 0) + 1
                status = "OK"
            except grpc.RpcError as e:
                status = e.code().name
                errors.setdefault(status, e.details())
            by_status[status] = by_status.get(status, 0) + 1


if __name__ == "__main__":
    sys.exit(main())
