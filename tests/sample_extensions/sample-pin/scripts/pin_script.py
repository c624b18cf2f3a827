from modules import scripts


class PinScript(scripts.Script):
    def title(self):
        return "Sample pin"

    def show(self, is_img2img):
        return scripts.AlwaysVisible
