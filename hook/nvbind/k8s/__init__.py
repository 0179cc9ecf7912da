"""Kubernetes device plugin (kubelet device plugin API v1beta1). Never on a hook path:
grpc and protobuf are imported only by `nvbind device-plugin`."""
