"""Draw an exported surface and path the way ParaView shows them, off-screen with VTK (for the README).

    losstrail export RUN_DIR --to surface.vtp --path path.vtp --log
    python examples/paraview_view.py surface.vtp path.vtp docs/open-formats-paraview.png

Needs ``pip install vtk``; it reads the files with VTK's own XML reader, as ParaView does.
"""

import sys


def main(surface_file: str, path_file: str, out: str) -> None:
    import vtk

    def read(name):
        reader = vtk.vtkXMLPolyDataReader()
        reader.SetFileName(name)
        reader.Update()
        return reader.GetOutput()

    surface, path = read(surface_file), read(path_file)
    x0, x1, y0, y1, z0, z1 = surface.GetBounds()
    # ParaView's Transform filter, as one would use it: make x and y span 1 and z a third of that.
    scale = (1 / (x1 - x0), 1 / (y1 - y0), 0.5 / (z1 - z0))

    lut = vtk.vtkColorTransferFunction()  # ParaView's default "Cool to Warm"
    lut.SetColorSpaceToDiverging()
    lut.AddRGBPoint(z0, 0.23, 0.299, 0.754)
    lut.AddRGBPoint(z1, 0.706, 0.016, 0.15)

    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.32, 0.34, 0.43)  # ParaView's default background
    for data, is_path in ((surface, False), (path, True)):
        mapper = vtk.vtkPolyDataMapper()
        if is_path:
            tube = vtk.vtkTubeFilter()
            tube.SetInputData(data)
            tube.SetRadius(0.004 / scale[0])
            tube.SetNumberOfSides(12)
            mapper.SetInputConnection(tube.GetOutputPort())
            mapper.ScalarVisibilityOff()
        else:
            mapper.SetInputData(data)
            mapper.SetLookupTable(lut)
            mapper.SetScalarModeToUsePointFieldData()
            mapper.SelectColorArray("zvalue")
            mapper.UseLookupTableScalarRangeOn()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.SetScale(*scale)
        if is_path:
            actor.GetProperty().SetColor(1.0, 0.85, 0.1)
        else:
            actor.GetProperty().SetInterpolationToPhong()
            actor.GetProperty().SetAmbient(0.25)
        renderer.AddActor(actor)

    bar = vtk.vtkScalarBarActor()
    bar.SetLookupTable(lut)
    bar.SetTitle("zvalue")
    bar.SetNumberOfLabels(4)
    bar.SetWidth(0.08)
    bar.SetHeight(0.5)
    bar.SetPosition(0.88, 0.25)
    bar.SetUnconstrainedFontSize(True)
    bar.GetTitleTextProperty().SetFontSize(14)
    bar.GetLabelTextProperty().SetFontSize(13)
    renderer.AddViewProp(bar)
    caption = vtk.vtkTextActor()
    caption.SetInput(f"{surface_file.rsplit('/', 1)[-1]} and {path_file.rsplit('/', 1)[-1]} in VTK (as in ParaView)")
    caption.GetTextProperty().SetFontSize(16)
    caption.SetPosition(12, 12)
    renderer.AddViewProp(caption)

    camera = renderer.GetActiveCamera()
    camera.SetFocalPoint(0.5 + x0 * scale[0], 0.5 + y0 * scale[1], 0.2 + z0 * scale[2])
    camera.SetPosition(x0 * scale[0] + 2.1, y0 * scale[1] - 1.0, z0 * scale[2] + 1.35)
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCameraClippingRange()

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(900, 560)
    window.SetMultiSamples(8)
    window.AddRenderer(renderer)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(out)
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()


if __name__ == "__main__":
    main(*sys.argv[1:4])
