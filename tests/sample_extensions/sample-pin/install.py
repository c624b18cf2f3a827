# As A1111 extensions do: check with `launch`, then pin a version. pydantic 1 would break fastapi/gradio.
import launch

if not launch.is_installed("surely-not-installed-sample-pkg") or True:
    try:
        launch.run_pip("install pydantic==1.10.17 einops", "pydantic 1 for sample-pin")
    except Exception as exc:  # many extensions only print the error and go on
        print(f"sample-pin: could not install: {exc}")
