# TEMPORARY (not committed): replaced by the cri-images branch
from shimproto.errors import NotFound

from .calls import rpc
from .pb import api_pb2 as pb
from .pb import api_pb2_grpc


class ImageService(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, cfg, state, manager):
        self.m = manager

    @rpc
    def ImageStatus(self, request, context):
        try:
            v = self.m.query("image_inspect", {"ref": request.image.image})
        except NotFound:
            return pb.ImageStatusResponse()
        return pb.ImageStatusResponse(image=pb.Image(id=v["id"], repo_tags=v["repo_tags"], size=v["size"]))
