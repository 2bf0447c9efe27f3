# gunicorn reads this file from the folder it starts in: the app's settings for gunicorn
# (randstream/gunicorn_conf.py). An installed app: gunicorn -c python:randstream.gunicorn_conf
from randstream.gunicorn_conf import *  # noqa: F403
