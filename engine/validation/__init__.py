"""The rules of the validate stage (engine.validate), one concept a module."""
