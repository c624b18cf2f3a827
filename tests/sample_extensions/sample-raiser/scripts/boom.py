import modules.scripts as scripts


class Raiser(scripts.Script):
    def title(self):
        return "Raiser"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        raise RuntimeError("raiser extension is broken on purpose")

    def postprocess_image(self, p, pp, *args):
        raise RuntimeError("raiser postprocess_image is broken too")
