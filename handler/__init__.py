"""TorchServe serving of g2u: the handler (packed into the .mar), archive building, server control and
the serving-overhead benchmark. Run the tools as modules from the repository root
(``python -m handler.serve up``)."""
