"""Tour step modules: each registers its steps with :func:`hf_ext.tour.tour_step` when imported.

To add a component's step, write ``hf_ext/tour/steps/<component>.py`` (standard-library imports only at
module level, heavy imports inside the step) and append its dotted name to :data:`STEP_MODULES`.
"""

#: Imported in this order by :func:`hf_ext.tour.registry.discover`; run order comes from each step's ``order``.
STEP_MODULES: list[str] = [
    "hf_ext.tour.steps.environment",
    "hf_ext.tour.steps.core",
    "hf_ext.tour.steps.atman",
    "hf_ext.tour.steps.dtm",
    "hf_ext.tour.steps.scar",
    "hf_ext.tour.steps.umup",
    "hf_ext.tour.steps.moral",
    "hf_ext.tour.steps.sld",
    "hf_ext.tour.steps.multifusion",
    "hf_ext.tour.steps.tfree",
    "hf_ext.tour.steps.mad",
]
