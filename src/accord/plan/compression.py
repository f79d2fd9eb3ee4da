"""The plan's ``compression_pipeline`` section: which stages tensors travel through, checked
strictly when the plan loads (docs/plan.md, "The compression pipeline")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: the stages of compression_pipeline.settings.upload, in the only order they compose
UPLOAD_STAGES = ("topk", "fp16", "bf16", "q8", "q4", "zstd")
#: the stages that change a tensor's value (the rest are lossless)
VALUE_STAGES = ("fp16", "bf16", "q8", "q4")
#: the only stage a download may use: a lossy model would no longer match its digest
DOWNLOAD_STAGES = ("zstd",)
#: the optional extra that brings the zstd stage
ZSTD_EXTRA = "pip install 'accord[zstd]'"


def _zstd_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("zstandard") is not None


def _stages(value: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    """``value`` if its stages are known, unique and in the order of ``allowed``, else ValueError saying so."""
    unknown = [stage for stage in value if stage not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} stage {unknown[0]!r}; the stages are {', '.join(allowed)} (in that order)")
    if len(set(value)) != len(value) or value != sorted(value, key=allowed.index):
        raise ValueError(f"{what} stages {value} must be distinct and in the order {', '.join(allowed)}")
    if len([stage for stage in value if stage in VALUE_STAGES]) > 1:
        raise ValueError(f"{what} stages {value} name more than one of {', '.join(VALUE_STAGES)}: choose one")
    if "zstd" in value and not _zstd_installed():
        raise ValueError(f"the zstd stage needs the zstandard package, which is not installed: {ZSTD_EXTRA}")
    return value


class CompressionSettings(BaseModel):
    """How tensors travel (docs/plan.md, "compression_pipeline"): ``upload`` stages encode a
    site's update relative to the round's global model; ``download`` may only be lossless."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    upload: list[str] = Field(default_factory=list)
    download: list[str] = Field(default_factory=list)
    topk_ratio: float = Field(0.01, gt=0, le=0.5)
    error_feedback: bool = True
    quantization_feedback: bool = False
    zstd_level: int = Field(3, ge=1, le=19)

    @field_validator("upload")
    @classmethod
    def _upload(cls, value: list[str]) -> list[str]:
        return _stages(value, UPLOAD_STAGES, "upload")

    @field_validator("download")
    @classmethod
    def _download(cls, value: list[str]) -> list[str]:
        lossy = [stage for stage in value if stage in UPLOAD_STAGES and stage not in DOWNLOAD_STAGES]
        if lossy:
            raise ValueError(
                f"download stage {lossy[0]!r} is lossy: a model changed on the way would not match its digest; "
                "downloads may use zstd (lossless) or nothing"
            )
        return _stages(value, DOWNLOAD_STAGES, "download")

    @property
    def upload_encoding(self) -> str:
        """The wire encoding of an update's float tensors ("" = raw), e.g. ``topk+q8+zstd``."""
        return "+".join(self.upload)

    @property
    def lossy_upload(self) -> bool:
        """Whether uploads lose precision (and so travel as changes from the global model)."""
        return any(stage != "zstd" for stage in self.upload)

    @property
    def upload_lossless(self) -> str:
        """The wire encoding of an update's other tensors (ints, bools): its lossless stages only."""
        return "zstd" if "zstd" in self.upload else ""

    @property
    def download_encoding(self) -> str:
        """The wire encoding of every tensor of a downloaded model."""
        return "+".join(self.download)


#: no stage at either end: every tensor travels raw
NO_COMPRESSION = CompressionSettings()


class CompressionSection(BaseModel):
    """The built-in compression pipeline (no template): see CompressionSettings."""

    model_config = ConfigDict(extra="forbid")

    defaults: str | None = None
    template: None = Field(None, description="the stages are built in; choose them with settings.upload and settings.download")
    settings: CompressionSettings = Field(default_factory=CompressionSettings)
