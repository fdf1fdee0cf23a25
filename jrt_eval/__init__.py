"""jrt-eval: recall-intensive evaluation of recurrent LMs, with and without JRT-Prompt, on lm-eval."""
__version__ = "0.1.0"
