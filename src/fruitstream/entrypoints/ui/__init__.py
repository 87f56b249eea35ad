"""The Streamlit app (extra ``ui``): ``app.py`` draws, ``views.py`` prepares what it draws."""
