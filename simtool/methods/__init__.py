"""Training methods (research lines) that plug into the engine; registry in each module's METHODS."""
