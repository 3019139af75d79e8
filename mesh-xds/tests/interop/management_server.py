"""An independently written xDS management server (grpcio + xds-protos) for interop tests.

It serves, over ADS state-of-the-world, one api Listener for TARGET whose HttpConnectionManager
points (RDS) at a RouteConfiguration splitting traffic by weight over one EDS cluster per
version, with endpoints in a weighted locality — the shapes istiod generates for proxyless gRPC.
Our Rust xDS client must accept them. Prints `port N` on stdout once listening, then one JSON
line per request received (type, version_info, response_nonce, error_detail) so the test can
check ACKs.

    python management_server.py --target echo.default.svc.cluster.local:50051 \
        --version v1=127.0.0.1:50061=80 --version v2=127.0.0.1:50062=20
"""

import argparse
import json
import sys
import threading
from concurrent import futures

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, wrappers_pb2

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def cluster_name(version: str, host: str, port: str) -> str:
    return f"outbound|{port}|{version}|{host}"


def build(target: str, versions) -> dict:
    host, port = target.rsplit(":", 1)
    hcm = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=target),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
            )
        ],
    )
    listener = listener_pb2.Listener(
        name=target, api_listener=api_listener_pb2.ApiListener(api_listener=pack(hcm))
    )
    weighted = route_components_pb2.WeightedCluster(
        clusters=[
            route_components_pb2.WeightedCluster.ClusterWeight(
                name=cluster_name(v, host, port), weight=wrappers_pb2.UInt32Value(value=w)
            )
            for v, _, w in versions
        ]
    )
    route = route_pb2.RouteConfiguration(
        name=target,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=f"{host}:{port}",
                domains=[host, target],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        route=route_components_pb2.RouteAction(weighted_clusters=weighted),
                    )
                ],
            )
        ],
    )
    clusters, assignments = [], []
    for v, address, _ in versions:
        name = cluster_name(v, host, port)
        clusters.append(
            cluster_pb2.Cluster(
                name=name,
                type=cluster_pb2.Cluster.EDS,
                eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
                    eds_config=ads_source(), service_name=name
                ),
                lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
            )
        )
        ip, ep_port = address.rsplit(":", 1)
        assignments.append(
            endpoint_pb2.ClusterLoadAssignment(
                cluster_name=name,
                endpoints=[
                    endpoint_components_pb2.LocalityLbEndpoints(
                        locality=base_pb2.Locality(region="local", zone="a"),
                        load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
                        lb_endpoints=[
                            endpoint_components_pb2.LbEndpoint(
                                endpoint=endpoint_components_pb2.Endpoint(
                                    address=address_pb2.Address(
                                        socket_address=address_pb2.SocketAddress(
                                            address=ip, port_value=int(ep_port)
                                        )
                                    )
                                ),
                                health_status=health_check_pb2.HEALTHY,
                            )
                        ],
                    )
                ],
            )
        )
    return {
        LISTENER: {target: listener},
        ROUTE: {target: route},
        CLUSTER: {c.name: c for c in clusters},
        ENDPOINTS: {a.cluster_name: a for a in assignments},
    }


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, resources: dict):
        self.resources = resources
        self.lock = threading.Lock()

    def StreamAggregatedResources(self, requests, context):
        nonce = 0
        sent_names = {}  # type URL -> the subscription last answered
        for request in requests:
            with self.lock:
                print(
                    json.dumps(
                        {
                            "type": request.type_url,
                            "names": list(request.resource_names),
                            "version_info": request.version_info,
                            "response_nonce": request.response_nonce,
                            "error_detail": request.error_detail.message,
                        }
                    ),
                    flush=True,
                )
            names = sorted(request.resource_names)
            if request.error_detail.message:
                continue  # a NACK: keep quiet until the config changes
            if sent_names.get(request.type_url) == names:
                continue  # an ACK, or a repeat of the same subscription: nothing new
            sent_names[request.type_url] = names
            known = self.resources.get(request.type_url, {})
            names = names or list(known)
            nonce += 1
            yield discovery_pb2.DiscoveryResponse(
                version_info="1",
                type_url=request.type_url,
                nonce=str(nonce),
                resources=[pack(known[n]) for n in names if n in known],
            )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--version", action="append", required=True, help="name=ip:port=weight")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    versions = []
    for spec in args.version:
        name, address, weight = spec.split("=")
        versions.append((name, address, int(weight)))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
        Ads(build(args.target, versions)), server
    )
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"port {port}", flush=True)
    # Stop when the test closes our stdin (or kills us).
    sys.stdin.read()
    server.stop(grace=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
