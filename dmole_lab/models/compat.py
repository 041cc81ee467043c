"""Compatibility shims: processors without torchvision, and peft on transformers 5.

Processors without torchvision: the image processor's PIL backend, and no video processor.

transformers 5 gives every image processor two backends: torchvision (the default) and PIL
(``XImageProcessorPil``). Without torchvision it falls back to the PIL one by itself. Video
processors have no such fallback, and five processors this toolkit supports declare one
(LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, InternVL, SmolVLM): without torchvision they can be
neither built, saved nor loaded, although images never touch the video processor.

:func:`processors_without_video` lets them build from their tokenizer and image processor alone:
when torchvision is missing, it makes ``ProcessorMixin`` leave the ``video_processor`` slot out
of the sub-processors it builds, saves and loads (a video input is then refused by the
processor itself). Where torchvision loads, it changes nothing. The CPU wheel of torch used here
cannot load torchvision's wheel (its operators fail to register), so this is what the CPU path
runs on; a GPU machine with a matching torchvision takes the unchanged path. README "Real
checkpoints" says so.

:func:`get_peft_model_quietly`: peft 0.21 reads transformers' deprecated
``is_gradient_checkpointing`` whenever it wraps a model, which printed a FutureWarning per task
in `make demo`.
"""

from __future__ import annotations

import inspect

_state = {"patched": False}


def torchvision_available() -> bool:
    """Whether transformers can use torchvision in this process."""
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


def processors_without_video() -> bool:
    """Let processors that declare a video processor build, save and load without one.

    Applies only when torchvision is missing; idempotent. Returns True when the processors run
    without their video processor in this process."""
    if _state["patched"] or torchvision_available():
        return _state["patched"]
    from transformers.processing_utils import ProcessorMixin

    get_attributes = ProcessorMixin.get_attributes.__func__
    from_args_and_dict = ProcessorMixin.from_args_and_dict.__func__

    def attributes_without_video(cls):
        # Processors pass their sub-processors positionally and ProcessorMixin pairs them
        # with this list, so a missing slot is simply never built, saved or loaded.
        return [a for a in get_attributes(cls) if a != "video_processor"]

    def build_without_video(cls, args, processor_dict, **kwargs):
        # SmolVLMProcessor takes video_processor without a default
        if "video_processor" in inspect.signature(cls.__init__).parameters:
            kwargs.setdefault("video_processor", None)
        return from_args_and_dict(cls, args, processor_dict, **kwargs)

    ProcessorMixin.get_attributes = classmethod(attributes_without_video)
    ProcessorMixin.from_args_and_dict = classmethod(build_without_video)
    _state["patched"] = True
    return True


def get_peft_model_quietly(model, config):
    """``peft.get_peft_model(model, config)`` without the FutureWarning peft triggers by
    reading a deprecated transformers property (module docstring)."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        return get_peft_model(model, config)


__all__ = ["get_peft_model_quietly", "processors_without_video", "torchvision_available"]
