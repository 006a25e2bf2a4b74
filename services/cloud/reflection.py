"""gRPC server reflection, v1 beside v1alpha: grpcurl, Postman and newer gRPC tools ask for v1.

grpcio-reflection ships only `grpc.reflection.v1alpha`. The v1 protocol has the same messages, field for
field (only the package differs), so v1 is served by the v1alpha implementation with the v1 method name;
the v1 file descriptor (v1alpha's, renamed) is added to the descriptor pool so that reflection can also
describe itself under v1.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Register grpc/reflection/v1/reflection.proto (v1alpha's descriptor under the v1 package) once."""
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old = reflection_pb2.DESCRIPTOR.package
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", V1_PACKAGE
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(f".{old}."):
                field.type_name = f".{V1_PACKAGE}." + field.type_name[len(old) + 2:]
    for service in proto.service:
        for method in service.method:
            method.input_type = f".{V1_PACKAGE}." + method.input_type[len(old) + 2:]
            method.output_type = f".{V1_PACKAGE}." + method.output_type[len(old) + 2:]
    proto.options.Clear()
    pool.Add(proto)


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1alpha and v1 for `service_names` (both reflection services are added to the list)."""
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    pool = descriptor_pool.Default()
    _add_v1_descriptor(pool)
    reflection.enable_server_reflection(names, server)
    servicer = ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE_NAME,
                                                                           {"ServerReflectionInfo": handler}),))
