"""The web app (`python -m rbm_cuda.serve`): rbm_cuda.web.app.create_app(model) and its page."""
