"""The guards: one module each, holding the guard, its settings, its policy keys and its stage.

Their order is fixed in one place, ``gateway.pipeline.order``, because the approval gate (which
needs the approval service, a layer above) stands among them.
"""
