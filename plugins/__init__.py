"""vqbench's built-in plugins, registered through the ``vqbench`` entry-point group like any third-party plugin."""
