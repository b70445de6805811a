"""JSON Schemas for extract: where they come from and how they load, their lowering to what a grammar can enforce,\nstring formats, and answers validated and chosen under them."""
