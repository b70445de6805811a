"""internvl-cli: document understanding (OCR, charts, schema-valid JSON) with locally loaded InternVL models."""

__version__ = "0.1.0"
