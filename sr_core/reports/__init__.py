"""sr_core.reports: the quality report of a scene and of an archive run.

The report as typed data (:mod:`.document`: :class:`~.document.SceneReport`, whose ``to_dict``
is the JSON document and ``from_dict`` reads one back), its JSON and markdown writers
(:mod:`.report`), and the self-contained HTML pages (:mod:`.html`: pixel sources, display maths,
figures, scene / medical / archive pages) with their Jinja2 templates (``templates/``). Reports
read the quality figures the pipeline measured and the pixels of the input and output; they never
run a model. May import: geometry, imaging, storage, publication, formats, models (descriptions
only) and quality; never compute, pipeline or anything above.
"""
