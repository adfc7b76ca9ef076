"""The real-data check (the paper's §5): ICL data sets, prompt building, the ICL forward pass with
attention capture, the kernel analyses of the captured attention, reports and figures.
Entry point: :func:`llm_check.realdata.pipeline.run`."""
