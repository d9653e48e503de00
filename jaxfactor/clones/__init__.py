"""Clone calling: every cell called cancer / healthy (and its clone) with a posterior.

``call(adata, celltype_key=..., healthy=[...], cancer=[...], method="allele", n_clones="auto")``
fits a clone model to REF/ALT read counts (the allele-count model by default; the binomial mixture
or CCLONE on request), chooses the number of clones, labels the clones from a cell-type annotation
and calls every cell; ``summary`` and ``plot`` report it. The command line is ``jaxfactor clones``.
"""

from ._annotate import Annotation, AnnotationWarning, annotate, check_annotation
from ._call import CRITERIA, DEFAULT_CANDIDATES, METHODS, OPTIONS, call, prefilter
from ._report import plot, summary

__all__ = ["Annotation", "AnnotationWarning", "CRITERIA", "DEFAULT_CANDIDATES", "METHODS", "OPTIONS", "annotate", "call",
           "check_annotation", "plot", "prefilter", "summary"]
