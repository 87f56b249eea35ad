"""The ways in: command line, Streamlit app, HTTP API and Spark job. Each only translates
between its world and ``FruitService``; none chooses or reaches a backend itself."""
