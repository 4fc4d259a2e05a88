from .ea_transformer import (  # noqa: F401
    EATransformerDecoder,
    EATransformerEncoder,
    EATransformerModel,
)
