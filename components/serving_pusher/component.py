"""ServingPusher: TFX's Pusher with an atomic push and the model card in the version folder.

Same inputs and PushedModel output as tfx.components.Pusher (so resolvers and MLMD queries
work unchanged), plus an optional ModelCard that lands in <version>/assets.extra/, the
folder TF Serving leaves alone.
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import proto_utils

from components import code_digest
from components.model_card.component import ModelCard
from components.serving_pusher import executor


class ServingPusherSpec(ComponentSpec):
    PARAMETERS = {
        standard_component_specs.PUSH_DESTINATION_KEY: ExecutionParameter(type=str),
        code_digest.CODE_SHA256_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        standard_component_specs.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        standard_component_specs.MODEL_BLESSING_KEY: ChannelParameter(
            type=standard_artifacts.ModelBlessing, optional=True),
        executor.MODEL_CARD_KEY: ChannelParameter(type=ModelCard, optional=True),
    }
    OUTPUTS = {
        standard_component_specs.PUSHED_MODEL_KEY: ChannelParameter(
            type=standard_artifacts.PushedModel),
    }


class ServingPusher(base_component.BaseComponent):
    """Push `model` to base_directory/<version>/ if `model_blessing` says it is blessed."""
    SPEC_CLASS = ServingPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, base_directory: str,
                 model_blessing: Optional[types.BaseChannel] = None,
                 model_card: Optional[types.BaseChannel] = None):
        destination = pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=base_directory))
        super().__init__(spec=ServingPusherSpec(
            model=model, model_blessing=model_blessing, model_card=model_card,
            push_destination=proto_utils.proto_to_json(destination),
            code_sha256=code_digest.component_sha256("serving_pusher"),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
